"""`torchrun --nproc_per_node 2 -m train.jointdit` on CPU (gloo) with 2 DataLoader workers per process: the
four readers see disjoint samples and, together, every sample exactly once per epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from safetensors.torch import load_file

from media.shards import write_shard
from tests.train.conftest import sounding_video

ROOT = Path(__file__).resolve().parents[2]


def write_shards(d, sizes=(2, 1, 1, 2, 1)) -> set[str]:
    keys, k = set(), 0
    for i, n in enumerate(sizes):
        items = [(f"c{k + j}", sounding_video(k + j, seconds=2.0, size=32), {"label": "bounce"}) for j in range(n)]
        write_shard(d / f"train-{i:06d}.tar", items)
        keys |= {key for key, *_ in items}
        k += n
    return keys


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# accelerate launch on a machine without GPUs: --multi_gpu makes it start the processes with torchrun (with --cpu
# it would start a single process unless MPI is set up)
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def torchrun(shards, out, tiny_experts, steps, *extra, launcher=TORCHRUN):
    cmd = [*launcher, "-m", "train.jointdit", "--shards", str(shards / "*.tar"), "--out-dir", str(out), "--preset", "tiny", "--height", "16",
           "--width", "16", "--batch-size", "1", "--num-workers", "2", "--steps", str(steps), "--save-every", "100",
           "--no-progress", "--video-model", tiny_experts[0], "--audio-model", tiny_experts[1], *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("launcher", [TORCHRUN, pytest.param(ACCELERATE, marks=pytest.mark.slow)],
                         ids=["torchrun", "accelerate-launch"])
def test_torchrun_two_processes_two_workers_split_the_shards(tiny_experts, tmp_path, launcher):
    keys = write_shards(tmp_path)  # 5 shards for 4 readers: one reader gets two shards
    out, log_dir = tmp_path / "run", tmp_path / "keys"
    r = torchrun(tmp_path, out, tiny_experts, 4, "--log-sample-keys", str(log_dir), launcher=launcher)
    assert r.stdout.count("saved to") == 1  # printed by the main process only

    records = [json.loads(line) for f in sorted(log_dir.glob("keys-rank*-worker*.jsonl")) for line in f.read_text().splitlines()]
    readers = {(x["rank"], x["worker"]) for x in records}
    assert readers == {(0, 0), (0, 1), (1, 0), (1, 1)}
    epoch0 = [x for x in records if x["epoch"] == 0]
    counts = Counter(x["key"] for x in epoch0)
    assert set(counts) == keys and max(counts.values()) == 1, counts  # all samples, each once, in epoch 0
    by_reader = {rw: {x["key"] for x in epoch0 if (x["rank"], x["worker"]) == rw} for rw in readers}
    assert all(by_reader.values())

    ck = out / "checkpoint-000004"
    state = json.loads((ck / "state.json").read_text())
    assert state["data_layout"] == [2, 2, 1] and state["batches_consumed"] == 4
    assert (ck / "rng-rank0.json").exists() and (ck / "rng-rank1.json").exists()


@pytest.mark.slow
def test_torchrun_resume_is_bit_identical(tiny_experts, tmp_path):
    """2 processes x 2 workers: 4 updates straight == 2 updates, stop, resume to 4 (three torchrun runs, ~3 min)."""
    write_shards(tmp_path)
    torchrun(tmp_path, tmp_path / "straight", tiny_experts, 4)
    torchrun(tmp_path, tmp_path / "split", tiny_experts, 2)
    torchrun(tmp_path, tmp_path / "split", tiny_experts, 4, "--resume", "latest")
    for name in ("jointdit_trainable.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a = load_file(str(tmp_path / "straight" / "checkpoint-000004" / name))
        b = load_file(str(tmp_path / "split" / "checkpoint-000004" / name))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name
