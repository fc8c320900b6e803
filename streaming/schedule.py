"""Which window is scored next: earliest deadline first, where each stream's deadlines
come from a virtual clock, so audio sent faster than real time (a file read fast, a
client spending its burst) waits for the capacity that real-time streams leave."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class StreamClock:
    """When a stream's windows are due: as if its audio played out in real time from
    the moment it arrives (the Virtual Clock of Zhang, SIGCOMM 1990).

    Audio of a live call arrives no earlier than it exists, so its windows are due
    as they complete. Audio that arrives ahead of real time is due when a live call
    would have produced it, so sending faster never buys a stream more than a
    real-time share; a stream that paused starts again from now, earning no credit.
    """

    def __init__(self, sample_rate: int):
        self.rate = sample_rate
        self.samples = 0
        self._due = -math.inf  # when the audio received so far is due
        self._from_time = 0.0  # when the latest arrival's first sample is due
        self._from_sample = 0

    def arrive(self, now: float, n: int) -> None:
        """``n`` samples arrive at time ``now``."""
        self._from_time = max(self._due, now)
        self._from_sample = self.samples
        self.samples += n
        self._due = self._from_time + n / self.rate

    def due(self, end: int) -> float:
        """Deadline of a window ending at sample ``end`` (within the latest arrival)."""
        return self._from_time + (end - self._from_sample) / self.rate


class DeadlineQueue(Generic[T]):
    """Items by deadline, earliest first; equal deadlines in the order they came."""

    def __init__(self):
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def put(self, deadline: float, item: T) -> None:
        heapq.heappush(self._heap, (deadline, next(self._order), item))

    def take(self, n: int, due_by: float = math.inf) -> list[T]:
        """Up to ``n`` items, earliest deadlines first, of those due by ``due_by``."""
        taken = []
        while self._heap and len(taken) < n and self._heap[0][0] <= due_by:
            taken.append(heapq.heappop(self._heap)[2])
        return taken

    def remove_earliest(self, where: Callable[[T], bool]) -> T | None:
        """Remove and return the earliest item for which ``where`` holds, if any."""
        entries = [e for e in self._heap if where(e[2])]
        if not entries:
            return None
        entry = min(entries)
        self._heap.remove(entry)
        heapq.heapify(self._heap)
        return entry[2]
