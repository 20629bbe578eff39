"""bench/gpu_check.py runs end to end on the CPU with tiny configs (so that on a GPU it works the first time),
writes one JSON with every section, and reports a failing section loudly instead of skipping it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def run(tmp_path, *args):
    out = tmp_path / "check.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    return r, json.loads(out.read_text())


def test_every_section_runs_on_cpu_tiny(tmp_path):
    r, d = run(tmp_path, "--steps", "1", "--pytest-args", "tests/sync_classifier/test_gpu.py")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert d["tiny"] and d["random_weights"] and d["ok"] and "random-init" in d["note"]
    s = d["sections"]
    assert list(s) == ["train_sync", "train_avsyncd", "train_jointdit", "curate_clip", "curate_imagebind",
                       "curate_psync", "pytest_gpu"]
    for name in ("train_sync", "train_avsyncd", "train_jointdit"):
        x = s[name]
        assert x["ok"] and x["error"] is None and x["preset"] == "tiny", x
        assert x["step_s"] > 0 and abs(x["samples_per_s"] * x["step_s"] - x["batch_per_gpu"]) < 1e-6
        assert x["trainable_params_m"] > 0 and x["last_loss"] == x["last_loss"]  # not NaN
    for name in ("curate_clip", "curate_imagebind", "curate_psync"):
        x = s[name]
        assert x["ok"] and x["windows"] == 3 and x["windows_per_s"] > 0 and x["scores_finite"], x
        assert 0 < x["busy_fraction"] <= 1 and x["busy_error"] is None
    assert s["pytest_gpu"]["ok"] and s["pytest_gpu"]["counts"] == {"skipped": 3}
    assert all("no CUDA device" in why for why in s["pytest_gpu"]["skip_reasons"])


def test_a_section_that_fails_is_reported_not_skipped(tmp_path):
    r, d = run(tmp_path, "--only", "train_sync,curate_psync", "--timeout-scale", "0.0001")
    assert r.returncode == 1 and not d["ok"]
    for name in ("train_sync", "curate_psync"):
        assert not d["sections"][name]["ok"] and d["sections"][name]["error"].startswith("SectionTimeout: timed out")
    assert "FAILED: SectionTimeout" in r.stdout


def test_pieces():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    parse_pytest, union_seconds = mod.parse_pytest, mod.union_seconds

    assert union_seconds([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == 4
    got = parse_pytest("SKIPPED [1] tests/x.py:3: no weights\n==== 2 passed, 1 skipped, 1 failed, 40 deselected in 3s ====")
    assert got == {"counts": {"passed": 2, "skipped": 1, "failed": 1, "deselected": 40},
                   "skip_reasons": ["tests/x.py:3: no weights"]}
