"""Time one AVSyncD training step against the frozen SD UNet's bare forward+backward on the same frames.

    python bench/avsyncd_step.py [--preset tiny|paper] [--batch-size 2] [--latent 8] [--repeats 5] [--device cpu]

AVSyncD step: UNet forward on [B, 12, 4, h, w] latents (first-frame convs and attention, audio and temporal
attention) + DDPM epsilon loss on frames 2..12 + backward into the trainable layers.
Baseline (measured in the same run): the plain `UNet2DConditionModel` (all weights frozen) on the same B x 12
frames as an image batch, forward + backward to its input (the activation gradients a frozen UNet costs).
Random-init weights (timing only); `paper` is SD 1.5's size (use a GPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", choices=["tiny", "paper"], help="model size")
    p.add_argument("--batch-size", type=int, default=2, help="videos per step")
    p.add_argument("--frames", type=int, default=12, help="frames per video")
    p.add_argument("--latent", type=int, default=8, help="latent side (paper: 32 for 256x256 frames)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from diffusers import UNet2DConditionModel

    from train.avsyncd_diffusion import DiffusionConfig, train_scheduler, training_loss
    from train.models.avsyncd import PRESETS, build_unet

    kw = PRESETS[a.preset]
    dev = a.device
    torch.manual_seed(0)
    base = UNet2DConditionModel(**{k: v for k, v in kw.items() if k != "audio_cross_attention_dim"}).to(dev)
    base.requires_grad_(False)
    model = build_unet(a.preset).to(dev)
    model.load_state_dict(base.state_dict(), strict=False)
    model.set_trainable()
    b, f, h = a.batch_size, a.frames, a.latent
    g = torch.Generator(device=dev).manual_seed(0)
    lat = torch.randn(b, f, 4, h, h, device=dev, generator=g)
    text = torch.randn(b, 77, kw["cross_attention_dim"], device=dev, generator=g)
    audio = torch.randn(b, f, 25, kw["audio_cross_attention_dim"], device=dev, generator=g)
    null = torch.zeros(1, f, 25, kw["audio_cross_attention_dim"], device=dev)
    sched = train_scheduler(DiffusionConfig())

    def step():
        loss = training_loss(model, lat, text, audio, null, sched, 0.2, g)["loss"]
        loss.backward()
        model.zero_grad(set_to_none=True)

    frames = lat.reshape(b * f, 4, h, h)
    text_f = text.repeat_interleave(f, 0)

    def bare():
        x = frames.clone().requires_grad_(True)
        base(x, torch.randint(0, 1000, (b * f,), device=dev), text_f).sample.square().mean().backward()

    t_base = timed(bare, a.repeats, dev)
    t_step = timed(step, a.repeats, dev)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"preset={a.preset} device={dev} batch={b}x{f} frames latent={h}x{h} threads={a.threads} "
          f"trainable={n_train / 1e6:.2f}M")
    print(f"frozen UNet2DConditionModel fwd+bwd: {t_base * 1e3:.1f} ms")
    print(f"AVSyncD training step:               {t_step * 1e3:.1f} ms")
    print(f"ratio: {t_step / t_base:.2f}x")
    return {"base_s": t_base, "step_s": t_step, "ratio": t_step / t_base}


if __name__ == "__main__":
    main()
