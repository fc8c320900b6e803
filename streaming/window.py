"""Per-stream ring buffer that cuts a sample stream into overlapping windows."""

from __future__ import annotations

import numpy as np


class Windower:
    """Collects 16 kHz samples and returns a window every ``hop`` samples once full.

    Memory stays at one window per stream whatever the stream's length: samples are
    written into a fixed ring and copied out only when a window completes.
    """

    def __init__(self, window: int, hop: int, min_short: int | None = None):
        if window <= 0 or hop <= 0:
            raise ValueError("window and hop must be positive")
        self.window = window
        self.hop = hop
        self.min_short = hop if min_short is None else min_short
        self.total = 0  # samples received so far
        self._ring = np.zeros(window, dtype=np.float32)
        self._next_end = window
        self._last_end = 0

    def push(self, x: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add samples; return ``(start_sample, window)`` for every window completed."""
        out = []
        x = np.asarray(x, dtype=np.float32)
        while len(x):
            n = min(len(x), self._next_end - self.total)
            self._write(x[:n])
            x = x[n:]
            if self.total == self._next_end:
                out.append((self.total - self.window, self._read(self.window)))
                self._last_end = self.total
                self._next_end += self.hop
        return out

    def flush(self) -> tuple[int, np.ndarray] | None:
        """The window that ends at the end of the stream when the last hop did not
        (as ``Scorer.score`` does), so the tail is scored too.

        A stream shorter than one window gives its whole audio (when at least
        ``min_short`` samples long) so short files still get a score.
        """
        if self.total == self._last_end:
            return None
        if self.total >= self.window:
            return self.total - self.window, self._read(self.window)
        if self.total < self.min_short:
            return None
        return 0, self._read(self.total)

    def _write(self, x: np.ndarray) -> None:
        pos = self.total % self.window
        first = min(len(x), self.window - pos)
        self._ring[pos : pos + first] = x[:first]
        self._ring[: len(x) - first] = x[first:]
        self.total += len(x)

    def _read(self, n: int) -> np.ndarray:
        """The last ``n`` samples, oldest first (a copy)."""
        end = self.total % self.window
        if n <= end:
            return self._ring[end - n : end].copy()
        return np.concatenate([self._ring[self.window - (n - end) :], self._ring[:end]])
