"""Read-ahead turns: concurrent sequential readers share a one-head origin fairly.

With one disk head (an HDD, a NAS), streams whose fillers each fetch one
chunk at a time interleave at the origin: every request pays a seek. Here the
read-ahead of every stream takes *turns* at the origin, in FIFO order: a turn
fetches a span of the stream's chunks back to back (one seek for the span),
then the next stream's turn comes. The span adapts to

* the origin's seek cost and throughput, measured on the turns themselves
  (each turn pays one seek and reads its chunks in sequence: a line fitted
  through the turns' lengths and times gives both): long enough that the
  seek is a small part of the turn (``SEEK_SHARE``);
* the number of streams taking turns and a gap budget (``GAP_BUDGET``): a
  reader that waits for its stream's next turn waits for the other streams'
  turns, and that wait stays within the budget.

A turn is sized in time, not chunks: it ends when one more chunk would make it
last longer than ``Turns.turn_seconds`` (at least FIRST_SPAN chunks), so a
slow patch of the origin shortens the spans rather than the others' patience.

Only read-ahead takes turns. A reader whose next chunk its stream's queued
turn, or the span of its turn under way, will bring waits for the filler to
reach it (at most the gap budget), as it waits for a chunk in flight, rather
than fetch it beside the filler; a fill a reader starts itself never waits
for a turn.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

# The longest a reader should wait for its stream's next turn: the turns of
# all the other streams, then its own first chunk (the benchmarks' target for
# the longest gap between two reads of a stream is 0.5 s).
GAP_BUDGET = 0.35
# A turn is long enough that the seek costs at most this part of it.
SEEK_SHARE = 0.05
SAMPLES = 32  # turns whose measurements are kept (the newest)
# The fewest chunks in a turn: two, so that every turn is a measurement (a turn
# of one chunk is not recorded); before anything is measured, turns alternate
# between this and twice as many, so the fit sees turns of different lengths.
FIRST_SPAN = 2


@dataclass(eq=False)  # hashed by identity: one per stream
class Turn:
    """A stream's place in the queue and the span its turn claimed.

    Readers of the stream wait on ``moved``, set (and replaced) whenever the
    stream moves on: its turn came, its filler started a fetch, its turn or
    the stream ended.
    """

    queued: bool = False
    in_turn: bool = False
    # In a turn: it fetches chunks up to this one (exclusive); None: up to the
    # end of the stream's window, as long as the turn's time lasts.
    claimed: int | None = None
    started: int = 0  # in a turn: the fills of the chunks below this one have started
    moved: trio.Event = field(default_factory=trio.Event)

    def covers(self, chunk: int, next: int, until: int) -> bool:
        """Whether the stream's (running) filler will fetch *chunk*: in this turn's
        span, or in a turn to come (queued, or about to queue once the chunks before
        it are dealt with: a reader fetching for itself meanwhile would keep it from
        ever queueing, the filler waiting on each of the reader's fills in turn)."""
        if self.in_turn:
            return self.started <= chunk < (until if self.claimed is None else self.claimed)
        return next <= chunk < until

    def move(self) -> None:
        self.moved.set()
        self.moved = trio.Event()


@dataclass
class TurnTimer:
    """The origin fetches of one turn: how many, from the first start to the last end."""

    chunks: int = 0
    began: float | None = None
    ended: float = 0.0
    clock: Callable[[], float] = time.perf_counter

    def now(self) -> float:
        return self.clock()

    def start(self) -> None:
        if self.began is None:
            self.began = self.clock()

    def done(self) -> None:
        self.chunks += 1
        self.ended = self.clock()

    @property
    def seconds(self) -> float:
        return 0.0 if self.began is None else self.ended - self.began


class Turns:
    """The FIFO of read-ahead turns at the origin, and the measurements that size them."""

    def __init__(self, gap_budget: float = GAP_BUDGET) -> None:
        self.gap_budget = gap_budget
        self._lock = trio.StrictFIFOLock()
        self._members: set[Turn] = set()  # streams that have taken or wait for a turn
        self._turns: deque[tuple[int, float]] = deque(maxlen=SAMPLES)  # (bytes, seconds)
        self._measuring = 0  # turns taken while nothing was measured

    @property
    def streams(self) -> int:
        return len(self._members)

    def leave(self, place: Turn) -> None:
        """The stream's filler ended: it takes no more turns."""
        self._members.discard(place)

    @asynccontextmanager
    async def turn(self, place: Turn) -> AsyncIterator[None]:
        """Wait for the stream's turn (FIFO), hold it for the body."""
        self._members.add(place)
        place.queued = True
        try:
            async with self._lock:
                place.queued = False
                place.in_turn = True
                place.move()
                yield
        finally:
            place.queued = place.in_turn = False
            place.claimed = None
            place.move()  # the turn ended (or was cancelled while queued)

    def record(self, timer: TurnTimer, chunk_size: int) -> bool:
        """Learn from a turn's fetches; False if it had too few to measure.

        A turn costs one seek plus its chunks read in sequence: over the last
        turns, a straight line through (chunks, seconds) has the time per chunk
        as its slope and the seek as its intercept. Single fetches say little:
        an origin's own read-ahead makes one fast and the next slow, wherever
        in the turn the seek fell; the turn's time is what it cost.
        """
        if timer.chunks < 2:
            return False
        self._turns.append((timer.chunks * chunk_size, timer.seconds))
        return True

    def _fit(self) -> tuple[float, float] | None:
        """(seek seconds, seconds per byte) from the turns measured, None if they
        do not tell (too few, or all of one length)."""
        if len(self._turns) < 2:
            return None
        sizes = [b for b, _ in self._turns]
        times = [t for _, t in self._turns]
        mean_b, mean_t = statistics.fmean(sizes), statistics.fmean(times)
        var = sum((b - mean_b) ** 2 for b in sizes)
        if var <= 0:
            return None
        slope = sum((b - mean_b) * (t - mean_t) for b, t in self._turns) / var
        if slope <= 0:  # noise: the longer turns were not slower
            return None
        return min(self.gap_budget, max(0.0, mean_t - slope * mean_b)), slope

    def seek_cost(self) -> float | None:
        """Seconds a turn costs beyond its chunks' reading: one seek."""
        fit = self._fit()
        return None if fit is None else fit[0]

    def seconds_per_byte(self) -> float | None:
        fit = self._fit()
        return None if fit is None else fit[1]

    def measuring_span(self) -> int:
        """Chunks of a turn while nothing is measured: alternately FIRST_SPAN and twice
        as many, so that the turns differ in length and the fit can tell."""
        self._measuring += 1
        return FIRST_SPAN * (1 + self._measuring % 2)

    def turn_seconds(self, chunk_size: int, streams: int | None = None) -> float | None:
        """How long a turn may last, for *streams* taking turns (the members by
        default); None before anything is measured (a turn is FIRST_SPAN chunks).

        Long enough that the seek is at most SEEK_SHARE of the turn, and short
        enough that a reader waiting for its stream's next turn (the other
        streams' turns, then its own seek and first chunk) waits within the gap
        budget. A turn is at least FIRST_SPAN chunks whatever this says (so many
        streams that two chunks each overrun the budget wait longer).
        """
        seek, per_byte = self.seek_cost(), self.seconds_per_byte()
        if seek is None or per_byte is None:
            return None
        amortized = seek / SEEK_SHARE
        others = max(0, (self.streams if streams is None else streams) - 1)
        if others == 0:
            return amortized
        fits = (self.gap_budget - seek - per_byte * chunk_size) / others
        return max(0.0, min(amortized, fits))

    def chunk_seconds(self, chunk_size: int) -> float:
        """The measured time one chunk of a turn takes (0 before any turn)."""
        per_byte = self.seconds_per_byte()
        return 0.0 if per_byte is None else per_byte * chunk_size
