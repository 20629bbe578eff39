"""Symmetric InfoNCE over the K x K shifted pairs of each instance, and offset accuracies."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sync_infonce(phi: torch.Tensor, temperature: float = 0.1) -> tuple[torch.Tensor, dict]:
    """phi [B, K, K] (phi[b, i, j] = phi(audio_i, video_j)); positives on the diagonal.

    loss = L_a2v + L_v2a (supplement Eq. 1): for audio clip k, cross-entropy over the K video clips,
    and for video clip k over the K audio clips, averaged over k and the batch. Negatives come only
    from the same instance.
    """
    b, k, _ = phi.shape
    logits = phi.float() / temperature
    target = torch.arange(k, device=phi.device).repeat(b)
    l_a2v = F.cross_entropy(logits.reshape(b * k, k), target)
    l_v2a = F.cross_entropy(logits.transpose(1, 2).reshape(b * k, k), target)
    with torch.no_grad():
        acc = offset_accuracy(phi, tolerance=0)
    return l_a2v + l_v2a, {"loss_a2v": l_a2v.item(), "loss_v2a": l_v2a.item(), **acc}


def offset_accuracy(phi: torch.Tensor, tolerance: int = 0) -> dict:
    """Fraction of rows (a2v: audio k -> argmax over videos) / columns (v2a) whose argmax is within
    `tolerance` offset steps of k (supplement Eq. 2; evaluation uses 31 offsets, tolerance 5 = +-0.2 s)."""
    k = phi.shape[-1]
    idx = torch.arange(k, device=phi.device)
    a2v = ((phi.argmax(dim=-1) - idx).abs() <= tolerance).float().mean().item()
    v2a = ((phi.argmax(dim=-2) - idx).abs() <= tolerance).float().mean().item()
    return {"acc_a2v": a2v, "acc_v2a": v2a}


def easy_infonce(phi_all: torch.Tensor, b: int, k: int, temperature: float = 0.1) -> tuple[torch.Tensor, dict]:
    """Stage-1 loss with easy negatives only: phi_all [B*K, B*K] over every audio (rows) and video
    (columns) clip of the batch, clip index = instance * K + offset. For audio clip (i, k) the candidates
    are its partner video (i, k) and every clip of the *other* instances; the other offsets of its own
    instance (the hard negatives) are masked out, so easy and hard negatives never share a softmax.
    Needs B >= 2. Accuracy: the partner scores highest among the candidates."""
    if b < 2:
        raise ValueError("stage 1 (easy negatives) needs at least 2 instances per batch")
    n = b * k
    inst = torch.arange(n, device=phi_all.device) // k
    same = inst[:, None] == inst[None, :]
    hard = same & ~torch.eye(n, dtype=torch.bool, device=phi_all.device)
    logits = (phi_all.float() / temperature).masked_fill(hard, float("-inf"))
    target = torch.arange(n, device=phi_all.device)
    l_a2v = F.cross_entropy(logits, target)
    l_v2a = F.cross_entropy(logits.T, target)
    with torch.no_grad():
        acc = {"acc_a2v": (logits.argmax(1) == target).float().mean().item(),
               "acc_v2a": (logits.argmax(0) == target).float().mean().item()}
    return l_a2v + l_v2a, {"loss_a2v": l_a2v.item(), "loss_v2a": l_v2a.item(), **acc}
