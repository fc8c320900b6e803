"""When stage 1 has flattened: a patience rule on the contrastive gap.

The gap is ``sim_pos - sim_neg``, the mean cosine similarity of JND positives minus that of
negatives, which pretraining exists to widen. One batch's gap is noisy, so the rule watches
its moving average over the last ``window`` steps: training is flat once that average has
not beaten its best by more than ``delta`` for ``patience`` steps. A gap that shrinks
(collapse) never beats its best, so it stops the run too.
"""

from __future__ import annotations

from collections import deque


class Plateau:
    """Fed the logged records in step order; ``__call__`` says whether training is flat.

    It holds no state a checkpoint must carry: replaying ``metrics.jsonl`` rebuilds it, which
    is what the training loop does on resume. Once flat it stays flat.
    """

    def __init__(self, window: int, patience: int, delta: float):
        if window <= 0 or patience <= 0:
            raise ValueError(f"window and patience must be positive steps, got {window} and {patience}")
        self.window, self.patience, self.delta = window, patience, delta
        self.recent: deque[tuple[int, float]] = deque()
        self.best = float("-inf")
        self.best_step: int | None = None
        self.flat = False

    def __call__(self, record: dict) -> bool:
        if self.flat or "sim_pos" not in record:
            return self.flat
        step = int(record["step"])
        self.recent.append((step, record["sim_pos"] - record["sim_neg"]))
        while self.recent[0][0] <= step - self.window:
            self.recent.popleft()
        if step < self.window:  # the first average would be over too few batches
            return False
        average = sum(g for _, g in self.recent) / len(self.recent)
        if average > self.best + self.delta:
            self.best, self.best_step = average, step
        self.flat = step - self.best_step >= self.patience
        return self.flat
