"""The training engine on a toy regression model (CPU, in-process): SIGTERM resume equals the uninterrupted
run, strict resume, retention, the NaN guard, tracker files, validation samples."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from accelerate.utils import is_tensorboard_available

from train import checkpointing as ckpt
from train.engine import Engine, EngineSettings, NonFiniteLoss, ResumeMismatch


class Toy(torch.nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.a = torch.nn.Linear(3, width)
        self.b = torch.nn.Linear(width, 1)
        self.frozen = torch.nn.Linear(1, 1)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def batches(start: int):
    g = torch.Generator().manual_seed(123)
    xs = torch.randn(64, 3, generator=g)
    i = start
    while True:
        x = xs[(4 * i) % 64:(4 * i) % 64 + 4]
        yield {"x": x, "y": x.sum(1, keepdim=True)}
        i += 1


def run(out, steps, resume=None, kill_at=None, width=4, lr=1e-2, nan_at=(), trackers=("tensorboard",), **kw):
    s = EngineSettings(out_dir=str(out), steps=steps, lr=lr, lr_warmup_steps=2, grad_accum=2, save_every=100,
                       ema_decay=0.9, progress=False, trackers=trackers, cpu=True, **kw)
    eng = Engine(s, run_config={"lr": lr, "model": {"width": width}, "steps": steps})
    torch.manual_seed(0)
    eng.setup(Toy(width))
    eng.resume(eng.find_checkpoint(resume))

    def loss_fn(batch, step):
        if kill_at is not None and step == kill_at:
            os.kill(os.getpid(), signal.SIGTERM)
        noise = torch.randn(batch["x"].shape, generator=eng.gen) * 0.01  # uses the saved random state
        loss = torch.nn.functional.mse_loss(eng.model(batch["x"] + noise), batch["y"])
        if eng.consumed in nan_at:  # micro-batch number (1-based)
            loss = loss * float("nan")
        return {"loss": loss}

    def validate(step):
        import numpy as np

        f = out / "samples" / f"step-{step:06d}.wav"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"RIFF")
        return {"metrics": {"val_loss": 0.5}, "files": [f], "audio": {"a": (np.zeros(160), 16000)},
                "images": {"v": np.zeros((8, 8, 3), np.uint8)}}

    r = eng.fit(batches(eng.consumed), loss_fn, validate)
    return eng, r


def test_sigterm_save_and_resume_equals_the_uninterrupted_run(tmp_path):
    _, straight = run(tmp_path / "a", 6, trackers=())
    eng1, first = run(tmp_path / "b", 6, kill_at=2, trackers=())
    assert first["interrupted"] == "SIGTERM" and first["step"] == 3
    assert ckpt.latest_checkpoint(tmp_path / "b").name == "checkpoint-000003"
    eng2, second = run(tmp_path / "b", 6, resume="latest", trackers=())
    assert second["interrupted"] is None and [h["step"] for h in second["history"]] == [4, 5, 6]
    losses = [h["loss"] for h in first["history"] + second["history"]]
    assert losses == pytest.approx([h["loss"] for h in straight["history"]], rel=1e-5)
    from safetensors.torch import load_file

    for name in ("weights.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a = load_file(str(tmp_path / "a" / "checkpoint-000006" / name))
        b = load_file(str(tmp_path / "b" / "checkpoint-000006" / name))
        assert a.keys() == b.keys() and a
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # frozen parameters are not in the checkpoint
    assert not any(k.startswith("frozen") for k in load_file(str(tmp_path / "a" / "checkpoint-000006" / "weights.safetensors")))


def test_strict_resume_names_the_changed_setting_and_weight(tmp_path):
    run(tmp_path / "r", 2, trackers=())
    with pytest.raises(ResumeMismatch) as e:
        run(tmp_path / "r", 4, resume="latest", lr=2e-2, trackers=())
    msg = str(e.value)
    assert "\n" not in msg and "lr 0.01 -> 0.02" in msg
    with pytest.raises(ResumeMismatch) as e:
        run(tmp_path / "r", 4, resume="latest", width=5, trackers=())
    assert "model.width 4 -> 5" in str(e.value)
    # steps may change (continue a run further)
    _, r = run(tmp_path / "r", 3, resume="latest", trackers=())
    assert [h["step"] for h in r["history"]] == [3]


def test_shape_mismatch_is_named(tmp_path):
    run(tmp_path / "w", 1, trackers=())
    s = EngineSettings(out_dir=str(tmp_path / "w"), steps=2, lr=1e-2, cpu=True, trackers=(), progress=False)
    eng = Engine(s, run_config={"lr": 1e-2, "model": {"width": 4}, "steps": 2})
    eng.setup(Toy(6))
    with pytest.raises(ResumeMismatch, match=r"another shape \(first: a.weight \(4, 3\) vs \(6, 3\)\)"):
        eng.resume(eng.find_checkpoint("latest"))


def test_retention_keeps_the_last_and_the_milestones(tmp_path):
    s_kw = dict(keep_last=2, milestones=(2,), milestone_every=5)
    out = tmp_path / "k"
    s = EngineSettings(out_dir=str(out), steps=9, lr=1e-2, save_every=1, cpu=True, trackers=(), progress=False,
                       grad_accum=1, **s_kw)
    eng = Engine(s, run_config={})
    eng.setup(Toy())
    eng.fit(batches(0), lambda b, st: {"loss": torch.nn.functional.mse_loss(eng.model(b["x"]), b["y"])})
    assert [p.name for p in ckpt.list_checkpoints(out)] == [f"checkpoint-{n:06d}" for n in (2, 5, 8, 9)]
    assert not list(out.glob(".*tmp"))


def test_nan_guard_skips_counts_and_stops(tmp_path):
    eng, r = run(tmp_path / "n", 4, nan_at=(3,), trackers=(), max_nonfinite=3)
    assert [h["step"] for h in r["history"]] == [1, 2, 3, 4] and eng.nonfinite == 1
    assert all(torch.isfinite(p).all() for p in eng.raw.parameters())
    recs = [json.loads(x) for x in (tmp_path / "n" / "log.jsonl").read_text().splitlines()]
    assert recs[-1]["nonfinite_skipped"] == 1
    with pytest.raises(NonFiniteLoss, match="3 updates had a NaN/inf"):
        run(tmp_path / "n2", 10, nan_at=tuple(range(100)), trackers=(), max_nonfinite=3)


@pytest.mark.skipif(not is_tensorboard_available(), reason="tensorboard not installed (a dependency: pip install -e .)")
def test_tracker_files_and_validation_samples(tmp_path):
    out = tmp_path / "t"
    _, r = run(out, 4, validate_every=2, log_every=1)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000002.wav", "step-000004.wav"]
    events = list(out.rglob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(events[0].parent), size_guidance={"scalars": 0, "audio": 0, "images": 0})
    ea.Reload()
    tags = ea.Tags()
    assert "train/loss" in tags["scalars"] and "val/val_loss" in tags["scalars"]
    assert [e.step for e in ea.Scalars("train/loss")] == [1, 2, 3, 4]
    assert "val/a" in tags["audio"] and "val/v" in tags["images"]
    evals = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if "eval" in x]
    assert [e["step"] for e in evals] == [2, 4] and evals[0]["eval"] == {"val_loss": 0.5}


@pytest.mark.parametrize("launch, setting, expected", [("bf16", None, "bf16"), ("bf16", "no", "no"), (None, None, "no")])
def test_precision_comes_from_accelerate_launch_unless_set(tmp_path, monkeypatch, launch, setting, expected):
    from accelerate.state import AcceleratorState

    if launch:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launch)  # as `accelerate launch --mixed_precision` sets it
    else:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    AcceleratorState._reset_state(True)
    try:
        eng = Engine(EngineSettings(out_dir=str(tmp_path), steps=1, lr=1e-3, mixed_precision=setting, cpu=True,
                                    trackers=()), run_config={})
        assert eng.precision == expected  # on the CPU the default is float32; on a GPU, bf16 (resolve_precision)
    finally:
        AcceleratorState._reset_state(True)


def test_bf16_is_the_default_on_a_gpu(monkeypatch):
    from train.engine import resolve_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_precision(None) == "bf16" and resolve_precision("fp16") == "fp16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert resolve_precision(None) is None  # accelerate reads the launcher's setting
