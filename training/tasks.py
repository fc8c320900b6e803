"""What each stage optimises, as modules the loop (and DDP) can wrap.

Each ``forward`` returns ``(loss, stats)`` where ``stats`` are floats worth logging.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch
from torch import nn

from jsqa.jnd import JNDSampler
from jsqa.model import JSQAModel

from .datasets import ClipBank
from .losses import hint_loss, mos_loss, relation_loss, supcon_loss


class ContrastiveTask(nn.Module):
    """Stage 1: SupCon over JND positives. Logs the mean cosine similarity of positive and
    negative pairs: their gap is what pretraining widens.

    With ``center`` the projections are centred over the batch before L2 normalisation
    (the job BatchNorm does in SimCLR's projection head). A randomly initialised HuBERT's
    pooled outputs share a large common component (cosine ~0.98 between any two clips), and
    without centring our first ``small`` run (lr 5e-4) fell into the collapsed solution
    (every similarity equal, loss log(B - 1)) within 100 steps. At lr 1e-4 the gap between
    positive and negative similarity after 65 steps was 0.26 with centring, 0.12 without.
    """

    def __init__(self, model: JSQAModel, temperature: float = 0.1, center: bool = True):
        super().__init__()
        self.model = model
        self.temperature = temperature
        self.center = center

    def forward(self, audio: torch.Tensor, positives: torch.Tensor):
        p = self.model.projection(self.model.embed(audio))
        if self.center:
            p = p - p.mean(dim=0, keepdim=True)
        z = nn.functional.normalize(p, dim=-1)
        loss = supcon_loss(z, positives, self.temperature)
        with torch.no_grad():
            sim = z @ z.T
            eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
            pos, neg = positives.bool() & ~eye, ~positives.bool() & ~eye
            stats = {"sim_pos": sim[pos].mean(), "sim_neg": sim[neg].mean()}
        return loss, stats


class MOSTask(nn.Module):
    """Stage 2: MOS regression (MSE). With ``chunk_weight`` > 0 the head also scores each
    chunk alone against the clip's label, weighted so, which asks every chunk's embedding to
    carry the clip's quality rather than what was said in it. With a teacher's embeddings in
    the batch, the pooled embeddings of the clips that have one can also be asked to relate
    to one another as the teacher's do (``relation_weight``: ``relation_loss``) and to predict
    the teacher's embedding through a linear hint head (``hint_weight``: ``hint_loss``).

    The hint head belongs to the task, not the model: it trains beside it, is checkpointed
    with the task, and is not exported. ``teacher_mean``/``teacher_std`` standardise the
    teacher's embedding per dimension, so every dimension counts alike in the hint."""

    def __init__(self, model: JSQAModel, chunk_weight: float = 0.0, relation_weight: float = 0.0,
                 hint_weight: float = 0.0, teacher_mean: np.ndarray | None = None,
                 teacher_std: np.ndarray | None = None):
        super().__init__()
        self.model = model
        self.chunk_weight = chunk_weight
        self.relation_weight = relation_weight
        self.hint_weight = hint_weight
        self.hint = None
        if hint_weight:
            if teacher_mean is None or teacher_std is None:
                raise ValueError("a hint needs the teacher embedding's mean and std per dimension")
            self.register_buffer("teacher_mean", torch.as_tensor(teacher_mean, dtype=torch.float32))
            self.register_buffer("teacher_std", torch.as_tensor(teacher_std, dtype=torch.float32))
            self.hint = nn.Linear(model.chunk_embedding_size, len(teacher_mean))

    def forward(self, audio: torch.Tensor, mos: torch.Tensor, teacher: torch.Tensor | None = None):
        chunks = self.model.chunk_embeddings(audio)
        pooled = self.model.pool_chunks(chunks)
        loss, stats = mos_loss(self.model.mos_from_embedding(pooled), mos), {}
        if self.chunk_weight:
            alone = self.model.pool_chunks(chunks[:, :, None])
            each = mos_loss(self.model.mos_from_embedding(alone), mos[:, None].expand(-1, chunks.shape[1]))
            loss = loss + self.chunk_weight * each
            stats["chunk_loss"] = float(each.detach())
        known = torch.isfinite(teacher).all(dim=1) if teacher is not None else None
        if self.relation_weight and known is not None:
            relation = relation_loss(pooled[known], teacher[known])
            loss = loss + self.relation_weight * relation
            stats["relation_loss"] = float(relation.detach())
        if self.hint is not None and known is not None:
            target = (teacher[known] - self.teacher_mean) / self.teacher_std
            hint = hint_loss(self.hint(pooled[known]), target)
            loss = loss + self.hint_weight * hint
            stats["hint_loss"] = float(hint.detach())
        return loss, stats

    def own_state(self) -> dict:
        """What the task holds beyond the model (the hint head): checkpointed for resuming."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}


class JNDSource:
    """Batches from the on-the-fly JND sampler, drawn one batch ahead on a thread so mixing
    and codec subprocesses overlap the model step. ``state()`` is the sampler state after
    the last batch handed out, so resuming redraws exactly the batches not yet trained on."""

    def __init__(self, sampler: JNDSampler, prefetch: int = 1):
        self.sampler = sampler
        self.prefetch = prefetch
        self._state = sampler.state()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _produce(self, q: queue.Queue) -> None:
        while not self._stop.is_set():
            try:
                b = self.sampler.batch()
                item = (torch.from_numpy(b.audio), torch.from_numpy(b.positives)), self.sampler.state()
            except Exception as e:  # surfaced in next()
                item = e, None
            while not self._stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[1] is None:
                return

    def close(self) -> None:
        """Stop the drawing thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def next(self):
        if self._thread is None:
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._thread = threading.Thread(target=self._produce, args=(self._queue,), daemon=True)
            self._thread.start()
        batch, state = self._queue.get()
        if state is None:
            raise batch
        self._state = state
        return batch

    def state(self) -> dict:
        return self._state

    def set_state(self, state: dict) -> None:
        if self._thread is not None:
            raise RuntimeError("set the sampler state before drawing the first batch")
        self.sampler.set_state(state)
        self._state = state


class ClipSource:
    """Random batches of labelled clips (a per-rank seeded generator). With
    ``refresh_every`` the bank picks up clips labelled since, every that many batches, so
    fine-tuning can start while the corpus is still being labelled."""

    def __init__(self, bank: ClipBank, batch_size: int, seed: int, refresh_every: int = 0):
        self.bank = bank
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.refresh_every = refresh_every
        self.drawn = 0

    def next(self):
        self.drawn += 1
        if self.refresh_every and self.drawn % self.refresh_every == 0:
            self.bank.refresh()
        return tuple(torch.from_numpy(a) for a in self.bank.batch(self.batch_size, self.rng))

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def close(self) -> None:
        pass
