"""Whether the worker receives the next batch while one is decided: measured, not assumed.

Overlapping pays when the broker's and the store's round trips leave the worker waiting: the
receive of the next batch and the settlement of the last one fill those waits. When nothing
waits (a broker on the same machine, a local store) the two threads only contend for the
interpreter, and one batch at a time is faster (``python -m bench.drain``: 0.8-0.9x at 0 ms).
So the worker measures both, as it runs: it settles a few batches one at a time, a few
overlapped, keeps the faster for a while, and measures again, since a network's latency
changes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from statistics import fmean
from typing import Literal

Mode = Literal["measured", "always", "never"]

#: Batches settled in each block that measures a mode (two blocks of each mode, alternated).
PROBE = 4
#: Batches settled in the faster mode before both are measured again.
KEEP = 64


class OverlapChooser:
    """``overlap()``: the mode of the next receive; ``settled(n)`` after each batch settled.
    ``mode`` "always" or "never" fixes the answer (what the tests and the benchmark compare).

    When measured, blocks of batches run one after another: a probe (one at a time,
    overlapped, one at a time, overlapped; ``PROBE`` batches each), then ``KEEP`` batches in
    the mode whose blocks settled more messages per second, then a probe again. A block's rate
    runs from the last settlement before it to its own last one.
    """

    def __init__(
        self, mode: Mode = "measured", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.mode = mode
        self._clock = clock
        self._blocks: deque[tuple[bool, int, bool]] = deque()  # (overlap, batches, measured)
        self._rates: dict[bool, list[float]] = {True: [], False: []}
        self._start: float | None = None
        self._messages = 0
        #: the mode the last probe chose (None before the first probe ends), for the log
        self.chosen: bool | None = None
        self._mode, self._left, self._measured = self._advance()

    def overlap(self) -> bool:
        """Receive the next batch while one is being decided?"""
        return self.mode == "always" or (self.mode == "measured" and self._mode)

    def settled(self, messages: int) -> None:
        """A batch of ``messages`` was settled."""
        if self.mode != "measured":
            return
        now = self._clock()
        if self._start is None:  # the first settlement starts the clock
            self._start = now
            return
        self._messages += messages
        self._left -= 1
        if self._left > 0:
            return
        if self._measured and now > self._start:
            self._rates[self._mode].append(self._messages / (now - self._start))
        self._start, self._messages = now, 0
        self._mode, self._left, self._measured = self._advance()

    def _advance(self) -> tuple[bool, int, bool]:
        if not self._blocks:
            if any(self._rates.values()):  # a probe ended: keep the faster mode for a while
                rates = {mode: fmean(found) for mode, found in self._rates.items() if found}
                self.chosen = max(rates, key=lambda mode: rates[mode])
                self._rates = {True: [], False: []}
                self._blocks.append((self.chosen, KEEP, False))
            else:
                self._blocks.extend([(False, PROBE, True), (True, PROBE, True)] * 2)
        return self._blocks.popleft()
