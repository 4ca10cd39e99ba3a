"""Just enough PromQL to evaluate the queries of mount/grafana-cachefs.json over scrapes.

bench/dashboard.py renders the dashboard's panels without a Grafana or a
Prometheus: it scrapes a mount's endpoint every second and evaluates each
panel's query here, at every scrape time. Supported: selectors with label
matchers (``instance`` matchers are ignored: one mount is scraped),
``rate``/``increase`` over a range (the difference over the samples in it,
per second of the part of the range that was scraped, without Prometheus's
extrapolation to the window's edges), ``clamp_max``, ``sum`` and
``sum by (...)``, ``histogram_quantile`` (interpolated as Prometheus does),
``time()``, numbers, and ``/``, ``-``, ``+`` between vectors with the same
labels or with a scalar. Anything else raises ValueError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]
# one scrape: the time, and every sample by (metric name, labels)
Scrape = tuple[float, Mapping[tuple[str, Labels], float]]

TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<dur>\[[^\]]+\])|(?P<str>\"[^\"]*\")"
    r"|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)|(?P<op>=~|!=|[(){},/+\-=]))"
)
DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def tokens(expr: str) -> list[str]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"cannot read {expr[pos:]!r}")
        out.append(match.group().strip())
        pos = match.end()
    return out


def seconds(text: str, rate_interval: float) -> float:
    body = text.strip("[]")
    if body == "$__rate_interval":
        return rate_interval
    parts = DURATION.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"bad duration {text}")
    return sum(int(n) * UNIT_SECONDS[u] for n, u in parts)


@dataclass
class Context:
    scrapes: Sequence[Scrape]
    index: int  # the scrape evaluated at
    rate_interval: float

    @property
    def now(self) -> float:
        return self.scrapes[self.index][0]


Node = Callable[[Context], "Vector | float"]


class Parser:
    def __init__(self, expr: str, rate_interval: float) -> None:
        self.toks = tokens(expr)
        self.pos = 0
        self.rate_interval = rate_interval

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise ValueError(f"expected {expected!r}, got {tok!r}")
        self.pos += 1
        return tok

    def parse(self) -> Node:
        node = self.expr()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r}")
        return node

    def expr(self) -> Node:
        node = self.term()
        while self.peek() in ("/", "-", "+"):
            op = self.take()
            node = binary(op, node, self.term())
        return node

    def term(self) -> Node:
        tok = self.take()
        if tok == "(":
            node = self.expr()
            self.take(")")
            return node
        if re.fullmatch(r"\d+(?:\.\d+)?", tok):
            value = float(tok)
            return lambda ctx: value
        if tok == "time":
            self.take("(")
            self.take(")")
            return lambda ctx: ctx.now
        if tok in ("rate", "increase"):
            self.take("(")
            name, matchers = self.selector(self.take())
            window = seconds(self.take(), self.rate_interval)
            self.take(")")
            return ranged(tok, name, matchers, window)
        if tok == "sum":
            by: tuple[str, ...] = ()
            if self.peek() == "by":
                self.take("by")
                by = self.label_list()
            self.take("(")
            inner = self.expr()
            self.take(")")
            return aggregate(inner, by)
        if tok == "clamp_max":
            self.take("(")
            inner = self.expr()
            self.take(",")
            top = float(self.take())
            self.take(")")
            return binary("min", inner, lambda ctx: top)
        if tok == "histogram_quantile":
            self.take("(")
            q = float(self.take())
            self.take(",")
            inner = self.expr()
            self.take(")")
            return quantile(q, inner)
        name, matchers = self.selector(tok)
        return instant(name, matchers)

    def label_list(self) -> tuple[str, ...]:
        self.take("(")
        names = [self.take()]
        while self.peek() == ",":
            self.take(",")
            names.append(self.take())
        self.take(")")
        return tuple(names)

    def selector(self, name: str) -> tuple[str, dict[str, str]]:
        matchers: dict[str, str] = {}
        if self.peek() == "{":
            self.take("{")
            while self.peek() != "}":
                label, op, value = self.take(), self.take(), self.take().strip('"')
                if label != "instance":  # one mount is scraped: $instance selects it
                    if op != "=":
                        raise ValueError(f"only = matchers: {label}{op}{value}")
                    matchers[label] = value
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
        return name, matchers


def _select(sample: Mapping[tuple[str, Labels], float], name: str, m: dict[str, str]) -> Vector:
    return {
        labels: value
        for (metric, labels), value in sample.items()
        if metric == name and all((k, v) in labels for k, v in m.items())
    }


def instant(name: str, matchers: dict[str, str]) -> Node:
    return lambda ctx: _select(ctx.scrapes[ctx.index][1], name, matchers)


def ranged(kind: str, name: str, matchers: dict[str, str], window: float) -> Node:
    def evaluate(ctx: Context) -> Vector:
        now_t, now = ctx.scrapes[ctx.index][0], ctx.scrapes[ctx.index][1]
        first = ctx.index
        while first > 0 and ctx.scrapes[first - 1][0] >= now_t - window:
            first -= 1
        if first == ctx.index:
            return {}  # one sample: no rate yet
        span = now_t - ctx.scrapes[first][0]  # the window, or as much of it as was scraped
        out = {}
        for labels, value in _select(now, name, matchers).items():
            # from the series' first sample in the window (it may have appeared later);
            # per second of the window, as Prometheus divides by the range
            for _, then in ctx.scrapes[first : ctx.index]:
                old = _select(then, name, matchers).get(labels)
                if old is not None:
                    out[labels] = (value - old) / span if kind == "rate" else value - old
                    break
        return out

    return evaluate


def aggregate(inner: Node, by: tuple[str, ...]) -> Node:
    def evaluate(ctx: Context) -> Vector:
        vec = inner(ctx)
        assert isinstance(vec, dict), "sum of a scalar"
        out: Vector = {}
        for labels, value in vec.items():
            key = frozenset((k, v) for k, v in labels if k in by)
            out[key] = out.get(key, 0.0) + value
        return out

    return evaluate


def quantile(q: float, inner: Node) -> Node:
    def evaluate(ctx: Context) -> Vector:
        vec = inner(ctx)
        assert isinstance(vec, dict)
        groups: dict[Labels, list[tuple[float, float]]] = {}
        for labels, value in vec.items():
            le = dict(labels)["le"]
            rest = frozenset((k, v) for k, v in labels if k != "le")
            groups.setdefault(rest, []).append((float(le), value))
        return {rest: histogram_quantile(q, buckets) for rest, buckets in groups.items()}

    return evaluate


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's: the bucket holding rank q * count, linearly interpolated."""
    buckets.sort()
    total = buckets[-1][1]
    if total <= 0 or not math.isinf(buckets[-1][0]):
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # the highest finite bound, as Prometheus answers
            return lower + (bound - lower) * (rank - below) / (count - below or 1)
        lower, below = bound, count
    return math.nan


def binary(op: str, left: Node, right: Node) -> Node:
    apply = {"/": _divide, "-": lambda a, b: a - b, "+": lambda a, b: a + b, "min": min}[op]

    def evaluate(ctx: Context) -> Vector | float:
        a, b = left(ctx), right(ctx)
        if isinstance(a, dict) and isinstance(b, dict):
            return {k: apply(v, b[k]) for k, v in a.items() if k in b}
        if isinstance(a, dict):
            return {k: apply(v, b) for k, v in a.items()}
        if isinstance(b, dict):
            return {k: apply(a, v) for k, v in b.items()}
        return apply(a, b)

    return evaluate


def _divide(a: float, b: float) -> float:
    return a / b if b else math.nan


def evaluate(expr: str, scrapes: Sequence[Scrape], rate_interval: float) -> dict[Labels, list]:
    """The query at every scrape: per series, a value per scrape (NaN where it had none)."""
    node = Parser(expr, rate_interval).parse()
    series: dict[Labels, list[float]] = {}
    for i in range(len(scrapes)):
        result = node(Context(scrapes, i, rate_interval))
        vec = result if isinstance(result, dict) else {frozenset(): result}
        for labels, value in vec.items():
            series.setdefault(labels, [math.nan] * len(scrapes))[i] = value
    return series
