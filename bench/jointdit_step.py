"""Time one JointDiT training step against the two experts' bare forward+backward on the same batch.

    python bench/jointdit_step.py [--preset tiny] [--batch-size 2] [--height 16] [--repeats 5]

Baseline (measured in the same run, interleaved with the JointDiT steps): SVD UNet forward+backward (same
trainable set: temporal layers) plus AudioLDM2 UNet forward+backward on the same latents. Random-init tiny
weights (timing only). Also prints the time of one EMA update of the trainable weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=2, help="clips per step (default: 2)")
    p.add_argument("--height", type=int, default=16, help="frame size in pixels; latents are half (default: 16)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per model (median; default: 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from train.diffusion import Condition, JointDiffusion
    from train.experts import build_jointdit, load_experts, write_tiny_experts

    with tempfile.TemporaryDirectory() as d:
        vunet, aunet, frozen = load_experts(*write_tiny_experts(d))
    model = build_jointdit(vunet, aunet, frozen, "tiny")
    model.set_trainable()
    b, hl = a.batch_size, a.height // 2
    g = torch.Generator().manual_seed(0)
    v0 = torch.randn(b, 14, 4, hl, hl, generator=g)
    a0 = torch.randn(b, 8, 50, 16, generator=g)
    cond = Condition(torch.randn(b, 4, hl, hl, generator=g), torch.randn(b, 1, frozen.clip_dim, generator=g),
                     torch.tensor([[6.0, 127.0, 0.02]] * b))
    diff = JointDiffusion()

    def joint_step():
        out = diff.training_losses(model, v0, a0, cond, generator=torch.Generator().manual_seed(1))
        out["loss"].backward()

    def experts_step():
        vin = torch.cat([v0, cond.image_latents[:, None].expand(-1, 14, -1, -1, -1)], 2)
        ov = vunet(vin, torch.full((b,), 0.2), cond.image_embeds, cond.added_time_ids).sample
        oa = aunet(a0, torch.full((b,), 500), encoder_hidden_states=None).sample
        (ov.square().mean() + oa.square().mean()).backward()

    def once(fn):
        model.zero_grad(set_to_none=True)
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    # interleaved (joint, experts, joint, ...) so that load from other jobs hits both alike
    once(joint_step), once(experts_step)  # warm-up
    pairs = [(once(joint_step), once(experts_step)) for _ in range(a.repeats)]
    tj, te = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    # the training loop's extra per-update work on the trainable weights: the EMA update
    from train.engine import EMA

    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    ema = EMA(trainable, 0.9999)
    t = time.perf_counter()
    for _ in range(a.repeats):
        ema.update(trainable)
    t_ema = (time.perf_counter() - t) / a.repeats
    print(f"tiny preset, batch {b}, video latents 14x4x{hl}x{hl}, audio latents 8x50x16, {a.threads} threads, "
          "random-init weights (timing only)")
    print(f"JointDiT train step      : {tj * 1000:8.1f} ms (median of {a.repeats})")
    print(f"experts fwd+bwd baseline : {te * 1000:8.1f} ms")
    print(f"ratio                    : {tj / te:8.2f}x")
    print(f"EMA update (per update)  : {t_ema * 1000:8.1f} ms ({sum(p.numel() for p in trainable.values()) / 1e6:.2f}M "
          "trainable weights)")
    return tj / te


if __name__ == "__main__":
    main()
