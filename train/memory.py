"""Per-GPU memory estimate of a training run (for `--dry-run`), without a GPU and without weights.

Weights: frozen parameters in the compute precision, trainable ones in float32 (autocast keeps the master
weights in float32). Gradients: float32 per trainable parameter. AdamW: two float32 moments. EMA: one float32
copy. Activations: the bytes autograd saves for the backward pass in one forward + loss at the chosen batch,
counted with saved-tensor hooks on a meta-device (or tiny CPU) pass in float32, halved for bf16/fp16 autocast
(an approximation: some saved tensors, e.g. norms' statistics, stay float32).
"""

from __future__ import annotations

import os
from typing import Callable

import torch

GIB = 1024 ** 3


def saved_activation_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the tensors autograd keeps for backward while `fn()` runs (works on the meta device)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def planned_precision(setting: str | None) -> str:
    """The precision a GPU run of these settings uses: the setting, else `accelerate launch`'s, else bf16."""
    return setting or os.environ.get("ACCELERATE_MIXED_PRECISION") or "bf16"


def measured_activations(step: Callable[[], object]) -> int | None:
    """`saved_activation_bytes` of `step()` run on the meta device (it builds its inputs and returns the loss);
    None, said in one line, when the pass fails: an estimate reports what it could not measure."""
    try:
        with torch.device("meta"):  # tensors the blocks create on the fly go to the meta device too
            return saved_activation_bytes(step)
    except Exception as e:  # noqa: BLE001
        print(f"activations: the meta-device pass failed ({type(e).__name__}: {e})")
        return None


def estimate(model: torch.nn.Module, precision: str, ema: bool, activation_bytes: int | None) -> dict:
    """GiB per process for `model` (its trainable parameters: requires_grad)."""
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    half = precision in ("bf16", "fp16")
    out = {
        "weights_trainable_fp32": 4 * n_train / GIB,
        "weights_frozen": (2 if half else 4) * n_frozen / GIB,
        "grads_fp32": 4 * n_train / GIB,
        "adamw_fp32": 8 * n_train / GIB,
        "ema_fp32": (4 * n_train / GIB) if ema else 0.0,
    }
    if activation_bytes is not None:
        out["activations"] = activation_bytes * (0.5 if half else 1.0) / GIB
    out["total"] = sum(out.values())
    out["trainable_params"], out["frozen_params"] = n_train, n_frozen
    return out


def format_estimate(est: dict, extra_frozen_gib: float = 0.0) -> str:
    rows = [(k, v) for k, v in est.items() if k not in ("total", "trainable_params", "frozen_params")]
    if extra_frozen_gib:
        rows.append(("frozen encoders/decoders", extra_frozen_gib))
    total = sum(v for _, v in rows)
    lines = [f"  {k:<26} {v:8.2f} GiB" for k, v in rows]
    if "activations" not in est:
        lines.append("  activations                not measured")
    lines.append(f"  {'total (per process)':<26} {total:8.2f} GiB  (+ CUDA context and allocator slack, ~1-3 GiB)")
    return "\n".join(lines)
