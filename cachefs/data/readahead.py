"""Read-ahead turns: concurrent sequential readers share a one-head origin fairly.

With one disk head (an HDD, a NAS), streams whose fillers each fetch one
chunk at a time interleave at the origin: every request pays a seek. Here the
read-ahead of every stream takes *turns* at the origin, in FIFO order: a turn
fetches a span of the stream's chunks back to back (one seek for the span),
then the next stream's turn comes. A turn lasts as long as the gap budget
(``GAP_BUDGET``) allows: a reader that waits for its stream's next turn waits
for the other streams' turns, then its own turn's lead (the seek and the
first chunks, measured on the turns themselves), and that wait stays within
the budget; within that, as long as it can be, since each turn costs a seek.

A turn is sized in time, not chunks: it ends when one more chunk, at the pace
of the turn's chunks so far, would make it last longer than
``Turns.turn_seconds`` (at least FIRST_SPAN chunks), so a slow patch of the
origin shortens the spans rather than the others' patience.

A turn's span is read in one worker-thread call (``ChunkCache._read_span``):
its chunks' preads follow each other with no trip back to the trio thread
between them, and each chunk is handed over as it lands. The spans are
chained at the origin (``Turns.chain``): a turn hands the FIFO lock on as
soon as its span has the head, the next stream's span is started then and
its thread waits for the head (a ``threading.Event`` the previous span's
thread sets after its last pread), so the head goes from one stream's span
to the next without waiting for the trio thread in between.

Only read-ahead takes turns. A reader whose next chunk its stream's queued
turn, or the span of its turn under way, will bring waits for the filler to
reach it (at most twice the gap budget), as it waits for a chunk in flight, rather
than fetch it beside the filler; a fill a reader starts itself never waits
for a turn.
"""

from __future__ import annotations

import statistics
import threading
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
    """The origin fetches of one turn: how many, from the first start to the last end,
    and when each ended (``laps``, the clock's readings)."""

    chunks: int = 0
    began: float | None = None
    ended: float = 0.0
    clock: Callable[[], float] = time.perf_counter
    laps: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.clock()

    def start(self) -> None:
        if self.began is None:
            self.began = self.clock()

    def done(self) -> None:
        self.chunks += 1
        self.ended = self.clock()
        self.laps.append(self.ended)

    def one_more_fits(self, seconds: float) -> bool:
        """Whether one more chunk, at the pace of this turn's chunks so far (after its
        first, which may have been cached or carried the seek), ends within
        *seconds* of the turn's start."""
        if self.began is None or not self.laps:
            return True
        laps = self.laps
        pace = (laps[-1] - laps[0]) / (len(laps) - 1) if len(laps) > 1 else laps[0] - self.began
        return self.clock() - self.began + pace <= seconds

    @property
    def seconds(self) -> float:
        return 0.0 if self.began is None else self.ended - self.began


class Turns:
    """The FIFO of read-ahead turns at the origin, and the measurements that size them."""

    def __init__(self, gap_budget: float = GAP_BUDGET) -> None:
        self.gap_budget = gap_budget
        self._lock = trio.StrictFIFOLock()
        self._members: set[Turn] = set()  # streams that have taken or wait for a turn
        self._leads: deque[float] = deque(maxlen=SAMPLES)  # seconds to a turn's second chunk
        self._measuring = 0  # turns taken while nothing was measured
        # Set by the worker thread of the newest span once that span stops reading
        # (its last pread returned, or it ended early): the next span's thread waits
        # for it, so spans reach the origin one after the other (see chain).
        self._head: threading.Event | None = None

    @property
    def patience(self) -> float:
        """How long a reader waits for its stream's filler to reach its chunk before it
        fills for itself: twice what the turns are sized for, so that the jitter of a
        loaded machine around the budget does not send readers to the origin beside
        the turns (each such fill costs two seeks and delays the turn under way); a
        filler that does not come at all (a turn hung on the origin) is still left."""
        return 2 * self.gap_budget

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

    def record(self, timer: TurnTimer) -> bool:
        """Learn from a turn's fetches; False if it had too few to measure.

        What sizes the turns is the *lead*: how long a turn takes from getting the
        origin head to its second chunk, the seek included wherever it fell (the
        first chunk of a turn is often in the origin's page cache already, read
        ahead at the end of the stream's last turn, and the seek then lands on the
        second). A reader whose turn comes waits that long at most for its next
        chunk. The median of the last turns', so a stray slow or cached turn does
        not move it. (A straight line through the turns' (length, time), to tell
        the seek from the chunks, does not work: a turn's length is set by time,
        so the turns all last about as long, and the fit reads noise.)
        """
        if timer.chunks < 2 or timer.began is None or len(timer.laps) < 2:
            return False
        self._leads.append(timer.laps[1] - timer.began)
        return True

    def chain(self) -> tuple[threading.Event | None, threading.Event]:
        """A new span's place at the origin head: the event its thread waits for
        before its first pread (None: nothing before it) and the one it sets when
        it stops reading. Called on the trio thread, in the turn (under the lock),
        so spans are chained in turn order."""
        before, mine = self._head, threading.Event()
        self._head = mine
        return before, mine

    def lead(self) -> float | None:
        """Seconds from a turn's start to its second chunk (median), None before any."""
        if not self._leads:
            return None
        return min(self.gap_budget, statistics.median(self._leads))

    def measuring_span(self) -> int:
        """Chunks of a turn while nothing is measured: alternately FIRST_SPAN and twice
        as many."""
        self._measuring += 1
        return FIRST_SPAN * (1 + self._measuring % 2)

    def turn_seconds(self, streams: int | None = None) -> float | None:
        """How long a turn may last, for *streams* taking turns (the members by
        default); None before anything is measured (a turn is FIRST_SPAN chunks).

        Short enough that a reader waiting for its stream's next turn (the other
        streams' turns, then its own turn's lead) waits within the gap budget,
        and as long as that allows: each turn costs a seek. A stream alone takes
        turns of the gap budget (it seeks nowhere between them). A turn is at least
        FIRST_SPAN chunks whatever this says (so many streams that two chunks each
        overrun the budget wait longer).
        """
        lead = self.lead()
        if lead is None:
            return None
        others = max(0, (self.streams if streams is None else streams) - 1)
        if others == 0:
            return self.gap_budget
        return max(0.0, (self.gap_budget - lead) / others)
