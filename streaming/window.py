"""Per-stream audio buffer that cuts a sample stream into overlapping windows."""

from __future__ import annotations

import collections

import numpy as np


class Windower:
    """Keeps a stream's 16 kHz samples once and says where its windows are.

    ``push`` returns the start of every window completed; the audio stays here until
    ``release`` says that window is done (scored or dropped), so overlapping windows
    waiting to be scored share their samples instead of each holding a copy. The buffer
    grows while windows wait and shrinks back once they are done, so a stream that
    burst costs no more than a live one afterwards.
    """

    def __init__(self, window: int, hop: int, min_short: int | None = None):
        if window <= 0 or hop <= 0:
            raise ValueError("window and hop must be positive")
        self.window = window
        self.hop = hop
        self.min_short = hop if min_short is None else min_short
        self.total = 0  # samples received so far
        # two windows: live audio moves the kept window down only once per window of audio
        self._min_capacity = 2 * window
        self._buf = np.zeros(self._min_capacity, dtype=np.float32)
        self._base = 0  # stream sample held at _buf[0]
        self._held: collections.deque[int] = collections.deque()  # starts of windows not yet released
        self._next_end = window
        self._last_end = 0

    @property
    def backlog(self) -> int:
        """Samples held beyond one window: audio whose windows still wait to be scored."""
        return max(0, self.total - self._keep_from() - self.window)

    @property
    def nbytes(self) -> int:
        return self._buf.nbytes

    def push(self, x: np.ndarray) -> list[int]:
        """Add samples; return the start sample of every window completed."""
        x = np.asarray(x, dtype=np.float32)
        self._make_room(len(x))
        at = self.total - self._base
        self._buf[at : at + len(x)] = x
        self.total += len(x)
        starts = []
        while self._next_end <= self.total:
            starts.append(self._next_end - self.window)
            self._last_end = self._next_end
            self._next_end += self.hop
        self._held.extend(starts)
        return starts

    def flush(self) -> tuple[int, int] | None:
        """``(start, length)`` of the window that ends at the end of the stream when the
        last hop did not (as ``Scorer.score`` does), so the tail is scored too.

        A stream shorter than one window gives its whole audio (when at least
        ``min_short`` samples long) so short files still get a score.
        """
        if self.total == self._last_end:
            return None
        if self.total >= self.window:
            start, length = self.total - self.window, self.window
        elif self.total < self.min_short:
            return None
        else:
            start, length = 0, self.total
        self._last_end = self.total
        self._held.append(start)
        return start, length

    def read(self, start: int, length: int, out: np.ndarray) -> None:
        """Copy the samples ``start .. start + length`` of a held window into ``out``."""
        at = start - self._base
        if at < 0 or start + length > self.total:
            raise ValueError(f"samples {start}..{start + length} are not held")
        out[:length] = self._buf[at : at + length]

    def hold(self, start: int) -> None:
        """Keep the samples from ``start`` (held audio, e.g. a hop still to be encoded)
        until ``release(start)``."""
        if start < self._base:
            raise ValueError(f"sample {start} is no longer held")
        self._held.append(start)

    def release(self, start: int) -> None:
        """The window (or hold) starting at ``start`` is done; its samples may go."""
        self._held.remove(start)
        keep = self._keep_from()
        if self._buf.size > self._min_capacity and 4 * (self.total - keep) <= self._buf.size:
            self._move(keep, max(self._min_capacity, 2 * (self.total - keep)))

    def _keep_from(self) -> int:
        # the next window (or the tail that flush scores) needs the last window of audio
        latest = max(0, self.total - self.window)
        return min(min(self._held), latest) if self._held else latest

    def _make_room(self, n: int) -> None:
        if self.total + n - self._base <= self._buf.size:
            return
        keep = self._keep_from()
        need = self.total - keep + n
        if need > self._buf.size:
            self._move(keep, max(self._min_capacity, 2 * need))
        else:
            self._move(keep, self._buf.size)

    def _move(self, keep: int, capacity: int) -> None:
        """Drop samples before ``keep``; a new capacity gets a new array, so a grown
        buffer's memory goes back when it shrinks."""
        kept = self._buf[keep - self._base : self.total - self._base]
        if capacity == self._buf.size:
            self._buf[: len(kept)] = kept  # numpy copies overlapping ranges safely
        else:
            buf = np.zeros(capacity, dtype=np.float32)
            buf[: len(kept)] = kept
            self._buf = buf
        self._base = keep
