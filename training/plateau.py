"""When stage 1 has flattened: a patience rule on the contrastive loss.

One batch's loss is noisy, so the rule watches its moving average over the last ``window``
steps: training is flat once that average has not fallen below its best by more than the
fraction ``delta`` for ``patience`` steps. It watches the loss, not the positive-negative
similarity gap that ``metrics.jsonl`` also logs: the gap is widest at the start, while every
embedding is still alike, and narrows as the loss falls (measured, `small`: gap 0.39 at
step 100 and 0.17 at step 400, loss 5.0 and 3.0), so a rule on the gap stops a run that is
still learning.
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
        self.best = float("inf")
        self.best_step: int | None = None
        self.flat = False

    def __call__(self, record: dict) -> bool:
        if self.flat or "sim_pos" not in record:
            return self.flat
        step = int(record["step"])
        self.recent.append((step, record["loss"]))
        while self.recent[0][0] <= step - self.window:
            self.recent.popleft()
        if step < self.window:  # the first average would be over too few batches
            return False
        average = sum(v for _, v in self.recent) / len(self.recent)
        if self.best_step is None or average < self.best * (1 - self.delta):
            self.best, self.best_step = average, step
        self.flat = step - self.best_step >= self.patience
        return self.flat
