"""cachefs: a tiered caching FUSE filesystem for slow origins."""

__version__ = "0.1.0"
