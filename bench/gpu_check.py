"""The GPU check: training step cost of the three models at paper size, curation model throughput, and
`pytest -m gpu`, in one JSON, in minutes.

    python bench/gpu_check.py [--out gpu_check.json] [--tiny] [--only train_jointdit,pytest_gpu]

On a CUDA machine (paper sizes, random init: timings and memory only, no meaningful outputs):
- train_sync / train_avsyncd / train_jointdit: one training step of the sync classifier (`paper` preset,
  21 offsets per instance), AVSyncD (SD 1.5-sized UNet, 12 frames of 32 x 32 latents, ImageBind-huge-sized
  audio tokens) and JointDiT (SVD + AudioLDM2-sized experts, `paper` joint blocks, 14 x 4 x 32 x 32 video
  and 8 x 50 x 16 audio latents, gradient checkpointing as the paper config) at the paper's per-GPU batch
  (4 each: the authors' configs; JointDiT: the project's paper config) with bf16 autocast over fp32
  weights: forward + loss + backward + AdamW step of the trainable parameters, built from the model
  modules and objectives as the trainers build them. Inputs are what the model consumes (latents, tokens,
  mel + frames); the frozen encoders in front of AVSyncD (VAE, ImageBind, CLIP text) are not timed.
  Reported: median step time, samples/s, peak allocated GPU memory.
- curate_clip / curate_imagebind / curate_psync: the curation stages (`clip_diff` with CLIP ViT-B/32,
  `imagebind` with ImageBind huge, `psync` with the sync classifier `paper` preset) at fp16 scoring synthetic
  10 s videos (2 s windows every 0.5 s): windows/s and the GPU busy fraction = union of the CUDA kernel
  intervals recorded by torch.profiler / wall time of the same run (preprocessing on the CPU included).
- pytest_gpu: `python -m pytest -m gpu` in a subprocess: exit code, passed / failed / skipped counts, the
  skip reasons.
Each section has its own time limit (SIGALRM) and reports `ok`, `error` (the exception or "timed out after
N s") and its wall time; nothing is skipped silently. The JSON is rewritten after every section. Exit code
0 when every section is ok, else 1.

Without CUDA (or with --tiny) the same code runs on tiny configs on the CPU in well under a minute (a test
runs it so); autocast is bf16 on the CPU too, peak memory is not measured there (null) and the busy
fraction is that of the CPU ops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PER_GPU_BATCH = {"train_sync": 4, "train_avsyncd": 4, "train_jointdit": 4}
"""Per-GPU batch at paper scale: the authors' configs (sync classifier: 4 instances x 8 GPUs = 32; AVSyncD:
4 per GPU, 64 in total) and the project's JointDiT paper config (batch_size 4 per process)."""

TIMEOUTS = {"train_sync": 45, "train_avsyncd": 60, "train_jointdit": 100, "curate_clip": 25,
            "curate_imagebind": 50, "curate_psync": 40, "pytest_gpu": 130}
"""Seconds per section on a GPU (450 s in all, under the 8 minutes the check may take)."""

TINY_TIMEOUTS = {"train_sync": 30, "train_avsyncd": 30, "train_jointdit": 45, "curate_clip": 20,
                 "curate_imagebind": 30, "curate_psync": 20, "pytest_gpu": 120}


class SectionTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise SectionTimeout in the main thread after `seconds` (SIGALRM; between Python bytecodes, so a
    single long kernel finishes first)."""
    if not hasattr(signal, "SIGALRM") or seconds <= 0:
        yield
        return

    def fire(signum, frame):
        raise SectionTimeout(f"timed out after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end) intervals (overlaps counted once)."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def busy_fraction(prof, device: torch.device, wall: float) -> float:
    """Share of `wall` seconds the device was busy: the union of the intervals of CUDA kernels (CPU ops
    on a CPU run) recorded by the profiler, over the wall time."""
    from torch.autograd import DeviceType

    want = DeviceType.CUDA if device.type == "cuda" else DeviceType.CPU
    spans = [(e.time_range.start / 1e6, e.time_range.end / 1e6) for e in prof.events() if e.device_type == want]
    return min(1.0, union_seconds(spans) / wall) if wall > 0 else float("nan")


# ------------------------------------------------------------------------------------ training steps


def time_steps(step, device: torch.device, steps: int, batch: int) -> dict:
    """Median wall time of `steps` calls of `step` after one warm-up, samples/s and peak memory."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up (allocations, cuDNN autotune)
    times = []
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        loss = step()
        sync(device)
        times.append(time.perf_counter() - t)
    s = statistics.median(times)
    return {"step_s": s, "samples_per_s": batch / s, "steps_timed": steps, "batch_per_gpu": batch,
            "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "last_loss": float(loss)}


def optimizer_step(params, loss_fn, device: torch.device, dtype: torch.dtype):
    """The step the trainers take: autocast forward + loss, backward, AdamW on the trainable params."""
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype):
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.detach()

    return step


def trainable_count(params) -> int:
    return sum(p.numel() for p in params)


def train_sync(ctx) -> dict:
    """Sync classifier: B instances x 21 offsets, every clip encoded once, the 21 x 21 phi (split head),
    symmetric InfoNCE (stage 2), as `sync_classifier.train` does."""
    from sync_classifier.audio import log_mel
    from sync_classifier.config import PRESETS
    from sync_classifier.frames import clip_tensor
    from sync_classifier.loss import sync_infonce
    from sync_classifier.model import SyncClassifier

    dev = ctx["device"]
    cfg = PRESETS["tiny" if ctx["tiny"] else "paper"]()
    spec = cfg.model.spec
    b, k = (1 if ctx["tiny"] else PER_GPU_BATCH["train_sync"]), cfg.num_offsets
    torch.manual_seed(0)
    model = SyncClassifier(cfg.model).to(dev).train()
    mel_shape = log_mel(torch.zeros(1, spec.num_samples), spec).shape[1:]
    vid_shape = clip_tensor(torch.zeros(1, spec.num_frames, spec.image_size, spec.image_size, 3, dtype=torch.uint8),
                            spec).shape[1:]
    g = torch.Generator(device=dev).manual_seed(0)
    mel = torch.randn(b * k, *mel_shape, device=dev, generator=g)
    video = torch.randn(b * k, *vid_shape, device=dev, generator=g)
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_fn():
        a, v = model.encode_audio(mel), model.encode_video(video)
        phi = model.head.pairwise(a.reshape(b, k, -1), v.reshape(b, k, -1))
        return sync_infonce(phi.float(), cfg.temperature)[0]

    out = time_steps(optimizer_step(params, loss_fn, dev, ctx["dtype"]), dev, ctx["steps"], b)
    return {**out, "preset": cfg.preset, "clips_per_instance": k, "input": {"mel": list(mel_shape), "video": list(vid_shape)},
            "trainable_params_m": trainable_count(params) / 1e6}


def train_avsyncd(ctx) -> dict:
    """AVSyncD: the UNet on [B, 12, 4, h, w] latents with text and per-frame audio tokens, DDPM epsilon
    loss on frames 2..12 with 20 % null audio (`train.avsyncd_diffusion.training_loss`)."""
    from train.avsyncd_diffusion import DiffusionConfig, train_scheduler, training_loss
    from train.models.avsyncd import PRESETS, build_unet, segment_audio_tokens

    dev = ctx["device"]
    preset = "tiny" if ctx["tiny"] else "paper"
    kw = PRESETS[preset]
    b, f, h = (1 if ctx["tiny"] else PER_GPU_BATCH["train_avsyncd"]), 12, (8 if ctx["tiny"] else 32)
    torch.manual_seed(0)
    unet = build_unet(preset, device=dev)
    unet.set_trainable()
    unet.train()
    if not ctx["tiny"]:
        unet.enable_gradient_checkpointing()
    g = torch.Generator(device=dev).manual_seed(0)
    d = kw["audio_cross_attention_dim"]
    lat = torch.randn(b, f, 4, h, h, device=dev, generator=g)
    text = torch.randn(b, 77, kw["cross_attention_dim"], device=dev, generator=g)
    audio = segment_audio_tokens(torch.randn(b, 1 + 12 * 19, d, device=dev, generator=g), f)
    null = torch.zeros_like(audio[:1])
    sched = train_scheduler(DiffusionConfig())
    params = [p for p in unet.parameters() if p.requires_grad]

    def loss_fn():
        return training_loss(unet, lat, text, audio, null, sched, 0.2, g)["loss"]

    out = time_steps(optimizer_step(params, loss_fn, dev, ctx["dtype"]), dev, ctx["steps"], b)
    return {**out, "preset": preset, "latents": [f, 4, h, h], "gradient_checkpointing": not ctx["tiny"],
            "trainable_params_m": trainable_count(params) / 1e6,
            "params_m": sum(p.numel() for p in unet.parameters()) / 1e6}


def train_jointdit(ctx) -> dict:
    """JointDiT from the two experts' configs (train/configs/{paper,tiny}), `JointDiffusion.training_losses`
    (EDM video + DDPM audio at one unified timestep) on latents, as the trainer does with a latent cache."""
    from train.diffusion import Condition, JointDiffusion
    from train.experts import JOINT_PRESETS, _cfg, _classes
    from train.models.jointdit import JointDiT, audio_unet_self_attention_only

    dev = ctx["device"]
    preset = "tiny" if ctx["tiny"] else "paper"
    b, hl = (1 if ctx["tiny"] else PER_GPU_BATCH["train_jointdit"]), (8 if ctx["tiny"] else 32)
    make = _classes()
    torch.manual_seed(0)
    with torch.device(dev):
        vunet = make["svd_unet"](_cfg(preset, "svd_unet"))
        aunet = audio_unet_self_attention_only(make["audioldm2_unet"](_cfg(preset, "audioldm2_unet")))
        clip_dim = _cfg(preset, "clip_vision")["projection_dim"]
        model = JointDiT.from_experts(vunet, aunet, **dict(JOINT_PRESETS[preset], clip_dim=clip_dim,
                                                           num_frames=vunet.config.num_frames))
    del vunet, aunet
    model = model.to(dev)
    model.set_trainable()
    model.train()
    if not ctx["tiny"]:
        model.enable_gradient_checkpointing()
    g = torch.Generator(device=dev).manual_seed(0)
    v0 = torch.randn(b, 14, 4, hl, hl, device=dev, generator=g)
    a0 = torch.randn(b, 8, 50, 16, device=dev, generator=g)
    cond = Condition(torch.randn(b, 4, hl, hl, device=dev, generator=g), torch.randn(b, 1, clip_dim, device=dev, generator=g),
                     torch.tensor([[6.0, 127.0, 0.02]] * b, device=dev))
    diff = JointDiffusion()
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_fn():
        return diff.training_losses(model, v0, a0, cond, generator=g)["loss"]

    out = time_steps(optimizer_step(params, loss_fn, dev, ctx["dtype"]), dev, ctx["steps"], b)
    return {**out, "preset": preset, "video_latents": [14, 4, hl, hl], "audio_latents": [8, 50, 16],
            "gradient_checkpointing": not ctx["tiny"], "trainable_params_m": trainable_count(params) / 1e6,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


# ------------------------------------------------------------------------------------ curation stages


def synthetic_videos(n: int, seconds: float, fps: float, size: tuple[int, int], seed: int = 0):
    """n random-pixel, random-noise videos with 2 s windows every 0.5 s (what the window stage makes)."""
    from media.decode import DecodedVideo
    from curate.records import Window

    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        frames = rng.integers(0, 255, (int(seconds * fps), *size, 3), dtype=np.uint8)
        audio = (rng.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
        ws = [Window(f"v{i}", f"v{i}.mp4", 0, s, s + 2.0, label="dog barking")
              for s in np.arange(0.0, seconds - 2.0 + 1e-6, 0.5)]
        items.append((DecodedVideo(frames, fps, audio, 16000), ws))
    return items


def run_stage(stage, ctx) -> dict:
    """Set the stage up (random init, built on the device), score the videos once to warm up, then once
    under the profiler: windows/s and device busy fraction."""
    dev = ctx["device"]
    stage.random_weights = True
    built = str(dev)
    try:
        with torch.device(dev):  # paper-size models initialise on the GPU (seconds, not minutes on a CPU)
            stage.setup()
    except Exception as e:  # noqa: BLE001 - a model that cannot be built under a device context: on the CPU
        built = f"cpu, then moved ({type(e).__name__} when built on {dev}: {str(e)[:200]})"
        stage.setup()
    if "items" not in ctx:
        ctx["items"] = synthetic_videos(*ctx["videos"])
    items = ctx["items"]
    windows = sum(len(ws) for _, ws in items)
    stage.score_batch(items[:1])  # warm-up
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        sync(dev)
        t = time.perf_counter()
        out = stage.score_batch(items)
        sync(dev)
        wall = time.perf_counter() - t
    cols = sorted(out[0])
    finite = all(np.isfinite(o[c]).all() for o in out for c in cols if c != "it")
    try:
        busy, busy_error = busy_fraction(prof, dev, wall), None
    except Exception as e:  # noqa: BLE001 - reported next to the throughput, which stands
        busy, busy_error = None, f"{type(e).__name__}: {e}"
    return {"windows": windows, "wall_s": wall, "windows_per_s": windows / wall, "built_on": built,
            "busy_fraction": busy, "busy_error": busy_error,
            "busy_method": ("union of CUDA kernel intervals (torch.profiler) / wall" if dev.type == "cuda"
                            else "union of CPU op intervals (torch.profiler) / wall"),
            "dtype": str(stage._dtype).replace("torch.", ""), "scores": cols, "scores_finite": bool(finite),
            "videos": {"count": ctx["videos"][0], "seconds": ctx["videos"][1], "fps": ctx["videos"][2],
                       "size": list(ctx["videos"][3])}}


def curate_clip(ctx) -> dict:
    from curate.filters.clip_diff import ClipDiff

    stage = ClipDiff(model="tiny" if ctx["tiny"] else "ViT-B-32", pretrained="", device=str(ctx["device"]),
                     dtype=ctx["stage_dtype"])
    return {"model": stage.model, **run_stage(stage, ctx)}


def curate_imagebind(ctx) -> dict:
    from curate.filters.imagebind_align import ImageBindAlign

    stage = ImageBindAlign(preset="tiny" if ctx["tiny"] else "huge", device=str(ctx["device"]), dtype=ctx["stage_dtype"])
    return {"model": f"imagebind {stage.preset}", **run_stage(stage, ctx)}


def curate_psync(ctx) -> dict:
    from curate.filters.psync import PSync

    stage = PSync(random_preset="tiny" if ctx["tiny"] else "paper", device=str(ctx["device"]), dtype=ctx["stage_dtype"])
    return {"model": f"sync classifier {stage.random_preset}", **run_stage(stage, ctx)}


# ------------------------------------------------------------------------------------ pytest -m gpu


def parse_pytest(output: str) -> dict:
    """Counts from pytest's summary line and the reasons of skipped tests (-rs)."""
    counts = {}
    tail = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|error|deselected)", line)]
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", tail[-1] if tail else ""):
        counts["error" if what.startswith("error") else what] = int(n)
    skips = [line.split(" ", 2)[-1] for line in output.splitlines() if line.startswith("SKIPPED")]
    return {"counts": counts, "skip_reasons": skips}


def pytest_gpu(ctx) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", *ctx["pytest_args"]]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=ctx["timeouts"]["pytest_gpu"] - 5)
    out = r.stdout + r.stderr
    res = {"command": " ".join(cmd[1:]), "returncode": r.returncode, **parse_pytest(out), "output_tail": out[-3000:]}
    c = res["counts"]
    if r.returncode != 0 or not c or c.get("failed") or c.get("error"):
        raise RuntimeError(f"pytest -m gpu: exit {r.returncode}, {c or 'no summary'}: {out.strip().splitlines()[-1:]}")
    if ctx["device"].type == "cuda" and not c.get("passed"):
        raise RuntimeError(f"pytest -m gpu on a GPU: nothing passed ({c}; skipped: {res['skip_reasons'][:5]})")
    return res


SECTIONS = {"train_sync": train_sync, "train_avsyncd": train_avsyncd, "train_jointdit": train_jointdit,
            "curate_clip": curate_clip, "curate_imagebind": curate_imagebind, "curate_psync": curate_psync,
            "pytest_gpu": pytest_gpu}


def run_section(name: str, ctx: dict) -> dict:
    t = time.perf_counter()
    try:
        with time_limit(ctx["timeouts"][name]):
            res = {"ok": True, "error": None, **SECTIONS[name](ctx)}
    except BaseException as e:  # noqa: BLE001 - every failure is recorded, loudly, in the JSON
        if isinstance(e, KeyboardInterrupt):
            raise
        tb = traceback.format_exc(limit=-3)
        res = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": tb[-2000:]}
    finally:
        import gc

        gc.collect()
        if ctx["device"].type == "cuda":
            torch.cuda.empty_cache()
    res["seconds"] = time.perf_counter() - t
    res["timeout_s"] = ctx["timeouts"][name]
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check.json", help="the JSON written (default: gpu_check.json)")
    p.add_argument("--tiny", action="store_true", help="tiny configs (the default without CUDA)")
    p.add_argument("--device", default="auto", help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--only", default="", help=f"comma-separated sections (default: all of {', '.join(SECTIONS)})")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per model after one warm-up (default: 3)")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every section's time limit")
    p.add_argument("--pytest-args", default="", help="extra arguments / test paths for pytest -m gpu (space-separated)")
    a = p.parse_args(argv)
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    tiny = a.tiny or dev.type != "cuda"
    only = [s for s in a.only.split(",") if s] or list(SECTIONS)
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    limits = TINY_TIMEOUTS if tiny else TIMEOUTS
    ctx = {"device": dev, "tiny": tiny, "dtype": torch.bfloat16, "steps": max(1, a.steps),
           "stage_dtype": "float16" if dev.type == "cuda" else "float32",
           "videos": (1, 3.0, 8.0, (48, 64)) if tiny else (8, 10.0, 25.0, (240, 320)),
           "timeouts": {k: v * a.timeout_scale for k, v in limits.items()}, "pytest_args": a.pytest_args.split()}
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
              "torch": torch.__version__, "cuda": torch.version.cuda, "tiny": tiny, "random_weights": True,
              "note": "random-init weights: timings and memory only; " + (
                  "tiny configs on the CPU (a smoke run of the check itself, not a measurement)" if tiny
                  else "paper sizes, train steps in bf16 autocast, curation stages in fp16"),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sections": {}}
    out = Path(a.out)
    t0 = time.perf_counter()
    for name in only:
        print(f"[gpu_check] {name} ...", flush=True)
        result["sections"][name] = r = run_section(name, ctx)
        print(f"[gpu_check] {name}: {'ok' if r['ok'] else 'FAILED: ' + r['error']} ({r['seconds']:.1f} s)", flush=True)
        result["total_s"] = time.perf_counter() - t0
        result["ok"] = all(s["ok"] for s in result["sections"].values())
        out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"[gpu_check] wrote {out} ({'all ok' if result['ok'] else 'FAILURES'}, {result['total_s']:.0f} s)")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
