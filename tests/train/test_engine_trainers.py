"""The three trainers run on train.engine: none keeps a loop of its own (no backward / optimizer step in
their modules), and the engine's features show up in their runs (checkpoint folders, validation samples,
strict resume through the command line)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINERS = ["train/jointdit.py", "train/avsyncd.py", "train/sync_classifier.py"]


def _calls(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            out.add(node.func.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            out.add(node.func.id)
    return out


@pytest.mark.parametrize("module", TRAINERS)
def test_trainers_use_the_engine_and_have_no_loop_of_their_own(module):
    src = ROOT / module
    calls = _calls(src)
    assert {"Engine", "fit", "setup", "resume"} <= calls, module
    # training-loop primitives live in train/engine.py only (sync_classifier.train_step: the one-step API the
    # benches and model tests use, outside the trainer)
    text = src.read_text()
    if module == "train/sync_classifier.py":
        text = text[text.index("def launched_by_accelerate"):]
    tree_calls = _calls_in(text)
    assert not {"backward", "clip_grad_norm_", "zero_grad", "Accelerator", "save_file", "get_scheduler"} & tree_calls, module
    assert "torch.load" not in text and "weights_only" not in text


def _calls_in(text: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
    return out


def test_jointdit_validation_samples_and_strict_resume(shard_dir, tiny_experts, tmp_path, capsys):
    from train.jointdit import cli, main

    out = tmp_path / "run"
    args = ["--shards", str(shard_dir / "*.tar"), "--out-dir", str(out), "--height", "16", "--width", "16",
            "--batch-size", "1", "--num-workers", "0", "--no-progress", "--video-model", tiny_experts[0],
            "--audio-model", tiny_experts[1], "--validate-every", "1", "--validate-steps", "2", "--validate-count", "2",
            "--trackers", "none"]
    r = main(args + ["--steps", "1"])
    assert r["history"][0]["step"] == 1
    folder = out / "samples" / "step-000001"
    assert sorted(p.name for p in folder.iterdir()) == ["val0.mp4", "val0.wav", "val1.mp4", "val1.wav"]
    assert all(p.stat().st_size > 100 for p in folder.iterdir())
    evals = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"eval"' in x]
    assert evals[0]["step"] == 1 and len(evals[0]["files"]) == 4
    capsys.readouterr()
    assert cli(args + ["--steps", "2", "--resume", "latest", "--lr", "5e-4"]) == 2
    err = [x for x in capsys.readouterr().err.strip().splitlines() if x.startswith("error")]
    assert len(err) == 1 and err[0].startswith("error: cannot resume") and "lr 0.001 -> 0.0005" in err[0]


def test_avsyncd_validation_samples(tmp_path, shard_dir):
    from train.avsyncd import parse_args, train

    cfg, _ = parse_args(["--config", str(ROOT / "train" / "configs" / "avsyncd_tiny.yaml"), "--shards",
                         str(shard_dir / "train-*.tar"), "--out-dir", str(tmp_path / "run"), "--steps", "1",
                         "progress=false", "validate_every=1", "validate_count=1", "trackers=none", "diffusion.sample_steps=2"])
    r = train(cfg)
    folder = tmp_path / "run" / "samples" / "step-000001"
    assert sorted(p.name for p in folder.iterdir()) == ["val0.mp4", "val0.wav"] and r["history"][0]["step"] == 1
    evals = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"eval"' in x]
    assert evals[0]["step"] == 1 and evals[0]["eval"]["loss"] > 0


@pytest.mark.parametrize("argv", [
    ["-m", "train.jointdit", "--preset", "tiny"],
    ["-m", "train.avsyncd", "--config", "train/configs/avsyncd_tiny.yaml"],
    ["-m", "sync_classifier.train", "--preset", "tiny"],
], ids=["jointdit", "avsyncd", "sync_classifier"])
def test_dry_run_prints_settings_data_plan_and_memory(argv, shard_dir):
    """--dry-run of each trainer: the resolved settings, the data plan its readers use and a per-GPU memory
    estimate whose activations were measured on the meta device; nothing is trained or written."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, *argv, "--shards", str(shard_dir / "*.tar"), "--dry-run"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert any(line.startswith("settings: {") for line in lines)
    plan = json.loads(next(line for line in lines if line.startswith("data plan: "))[len("data plan: "):])
    assert plan["shards"] >= 1 and plan["mode"] in ("exact", "resampled") and plan["samples"] > 0
    assert any(line.strip().startswith("activations ") and "GiB" in line for line in lines), r.stdout
    assert "not measured" not in r.stdout and "meta-device pass failed" not in r.stdout
    assert any("total (per process)" in line for line in lines)
