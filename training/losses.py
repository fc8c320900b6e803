"""Training losses.

Stage 1 uses the supervised-contrastive loss of Khosla et al. (2020, "SupCon", their
L_out form), with JND positives as the "same class" relation. For each anchor i with at
least one positive,

    L_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a != i} exp(z_i.z_a / t) )

over L2-normalised projections z. It is InfoNCE with several positives per anchor: it
pulls all mixtures within one JND of each other together (whatever the words) and pushes
mixtures one JND or more apart away. Unlike a fixed-pair InfoNCE it uses every positive the
batch happens to contain. Temperature 0.1: SupCon's default; a low temperature weights
the hard negatives (mixtures just over one JND apart) most, which is the boundary we want
the embedding to resolve, while much lower values make training unstable with our small
CPU batches (16 items).

Stage 2 regresses MOS with the mean squared error (the metric reported is RMSE). With a
teacher's embeddings it can also match how that teacher relates the batch's clips to one
another (``relation_loss``: similarity-preserving distillation, Tung & Mori 2019), which
needs no head mapping one embedding onto the other, so nothing is added to the network;
or predict the teacher's embedding itself through a linear head used only in training
(``hint_loss``: a FitNets-style hint, Romero et al. 2015, on the pooled embedding).
"""

from __future__ import annotations

import torch


def supcon_loss(z: torch.Tensor, positives: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised-contrastive loss over a batch.

    ``z``: ``[B, P]`` L2-normalised projections; ``positives``: ``[B, B]`` bool, symmetric,
    diagonal ignored. Anchors without a positive are left out of the mean.
    """
    n = z.shape[0]
    if positives.shape != (n, n):
        raise ValueError(f"positives must be [{n}, {n}], got {tuple(positives.shape)}")
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = positives.to(z.device).bool() & ~eye
    logits = (z @ z.T) / temperature
    logits = logits.masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = pos.sum(dim=1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        raise ValueError("no anchor has a positive in this batch")
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(dim=1)[has_pos] / n_pos[has_pos]
    return -mean_log_prob_pos.mean()


def mos_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(pred, target)


def relation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the cosine similarities of every pair of the batch's
    clips in the student's and in the teacher's embedding (``[n, d_s]``, ``[n, d_t]``), each
    centred over the batch first so that what all clips share does not count."""
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"student and teacher embed {student.shape[0]} and {teacher.shape[0]} clips")
    if student.shape[0] < 2:
        return student.sum() * 0.0
    sims = []
    for z in (student, teacher):
        z = torch.nn.functional.normalize(z - z.mean(dim=0, keepdim=True), dim=-1)
        sims.append(z @ z.T)
    off = ~torch.eye(student.shape[0], dtype=torch.bool, device=student.device)
    return torch.nn.functional.mse_loss(sims[0][off], sims[1][off])


def hint_loss(pred: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the hint head's prediction of the (standardised) teacher
    embedding; zero when no clip of the batch has one."""
    if pred.shape != teacher.shape:
        raise ValueError(f"hint predicts {tuple(pred.shape)} for a teacher embedding of {tuple(teacher.shape)}")
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    return torch.nn.functional.mse_loss(pred, teacher)
