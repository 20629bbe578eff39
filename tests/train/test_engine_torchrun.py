"""train.engine under `torchrun --nproc_per_node 2` (gloo, CPU): SIGTERM to one rank stops both at the same
update with one checkpoint, and the resumed run equals the uninterrupted one, also when the other rank's
run folder is node-local (it never sees the checkpoint) (the in-process equivalent is
tests/train/test_engine.py, in the default suite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def toy(out, steps, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.train.engine_toy", str(out), str(steps), *extra]
    r = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads([x for x in r.stdout.splitlines() if x.startswith("{")][-1])


@pytest.mark.slow
def test_two_process_sigterm_resume_equals_the_uninterrupted_run(tmp_path):
    straight = toy(tmp_path / "a", 6)
    # rank 1 has a "node-local" run folder of its own: only the main process writes, resume reads the main's copy
    first = toy(tmp_path / "b", 6, "--kill-at", "5", "--node-local")  # micro-batch 5 = the first of update 3
    assert first["interrupted"] == "SIGTERM" and first["step"] == 3
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint-*")) == ["checkpoint-000003"]
    assert {p.name for p in (tmp_path / "b" / "checkpoint-000003").glob("rng-rank*.json")} == {"rng-rank0.json", "rng-rank1.json"}
    second = toy(tmp_path / "b", 6, "--resume", "--node-local")
    assert not (tmp_path / "b-rank1").exists()
    assert second["interrupted"] is None
    assert first["losses"] + second["losses"] == pytest.approx(straight["losses"], rel=1e-5)
    for name in ("weights.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a = load_file(str(tmp_path / "a" / "checkpoint-000006" / name))
        b = load_file(str(tmp_path / "b" / "checkpoint-000006" / name))
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
