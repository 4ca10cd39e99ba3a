# cachefs — `make demo` and `make test` work on a fresh Debian machine.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# Debian packages: FUSE runtime + headers (pyfuse3 builds against them),
# getfattr/setfattr, and what building pyfuse3 in a venv needs; Redis for the
# tests (the demo keeps its stats in the embedded store and needs no Redis).
DEMO_PACKAGES := fuse3 libfuse3-dev pkg-config attr gcc python3-dev python3-venv
APT_PACKAGES := $(DEMO_PACKAGES) redis-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO := $(CURDIR)/demo

.PHONY: setup system-packages demo-packages demo demo-stop test lint typecheck clean install-helper bench-seq bench bench-quick bench-deps bench-scale

setup: system-packages $(VENV)/.installed

# $(call apt_install,PACKAGES): install those of PACKAGES not installed yet.
define apt_install
	@missing=$$(for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
endef

system-packages:
	$(call apt_install,$(APT_PACKAGES))

demo-packages:
	$(call apt_install,$(DEMO_PACKAGES))

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Builds a sample library (once), mounts it at demo/mnt, reads a movie cold and
# again after dropping the kernel's page cache (as root; O_DIRECT otherwise),
# and prints both times and where the bytes came from (cachefs/app/demo.py).
demo: demo-packages $(VENV)/.installed
	@$(PY) -m cachefs.app.demo $(DEMO)
	@echo
	@echo "Try:"
	@echo "  $(VENV)/bin/cachefs status"
	@echo "  $(VENV)/bin/cachefs stats $(DEMO)/mnt"
	@echo "  $(VENV)/bin/cachefs where $(DEMO)/mnt/Movies"
	@echo "  $(VENV)/bin/cachefs config show $(DEMO)/mnt"
	@echo "Stop it with: make demo-stop"

demo-stop:
	@if mountpoint -q $(DEMO)/mnt; then fusermount3 -u $(DEMO)/mnt && echo "unmounted $(DEMO)/mnt"; \
	else echo "demo is not mounted"; fi

lint: setup
	$(VENV)/bin/ruff check cachefs tests bench
	$(VENV)/bin/ruff format --check cachefs tests bench
	$(VENV)/bin/lint-imports  # the layering contract in pyproject.toml

typecheck: setup
	$(VENV)/bin/mypy cachefs

test: setup lint typecheck
	$(VENV)/bin/pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis

# For fstab / systemd mounts: mount(8) runs /sbin/mount.fuse.cachefs for type fuse.cachefs.
install-helper: setup
	$(SUDO) ln -sf $(CURDIR)/$(VENV)/bin/mount.cachefs /sbin/mount.fuse.cachefs
	$(SUDO) ln -sf $(CURDIR)/$(VENV)/bin/cachefs /usr/local/bin/cachefs
	@echo "installed /sbin/mount.fuse.cachefs and /usr/local/bin/cachefs"

# Sequential read of a cached 256 MiB file vs the origin (root: drops caches).
bench-seq: setup
	$(PY) bench/seq_read.py --runs 3

# Benchmark tools: matplotlib for the chart, Debian's rclone as the peer.
# (fio is not needed: every workload is a small Python reader, so each system
# gets exactly the same requests.)
bench-deps: setup
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	@dpkg-query -W -f='$${Status}' rclone 2>/dev/null | grep -q "ok installed" || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq rclone; }

# cachefs vs rclone's VFS cache vs the slow origin (root: mounts, loop devices,
# drop_caches). 3 repetitions on the full data set, ~15 min on 2 cores; results
# in bench-results/, tables and chart in docs/benchmarks.md.
bench: bench-deps
	results=$$($(SUDO) $(PY) bench/run.py --reps 3 --out bench-results) && \
	$(PY) bench/report.py "$$results"
	$(SUDO) $(PY) bench/prediction.py --reps 3 --out bench-results

# One repetition of (a), (b'), (e), (f') on the small data set, < 3 min; the
# report goes beside the results (bench-results/*.md), not into the docs.
bench-quick: bench-deps
	results=$$($(SUDO) $(PY) bench/run.py --quick --out bench-results) && \
	$(PY) bench/report.py "$$results"

# Scale (issue 15): a library of 10 k, 100 k and 1 M entries on the local disk and
# an SSD tier of 1 M chunks, built once under $(SCALE_DATA) and reused; mount start,
# index load, scan cost per entry, RSS, eviction cost, `cachefs check` (root:
# mounts, drop_caches). ~25 min on 2 cores, ~5 more to build the data the first time (~10 GB on
# disk); quick: make bench-scale SCALE_ARGS="--entries 10000,100000 --chunks 100000 --reps 1".
SCALE_DATA ?= /tmp/scale-data
SCALE_ARGS ?=
bench-scale: setup
	$(SUDO) $(PY) bench/scale.py --data $(SCALE_DATA) --out bench-results $(SCALE_ARGS)
