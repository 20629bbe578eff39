"""Resumability after kill -9, the Ray runner matching the local one, refilter matching a full run."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from common.cli import UsageError
from curate.config import load_config
from media.decode import DecodeConfig, decode_video
from curate.runner import run
from media.shards import read_tar_members

REPO = Path(__file__).resolve().parents[2]


def _table(out, name, sort):
    return pq.read_table(Path(out) / f"{name}.parquet").to_pandas().sort_values(sort).reset_index(drop=True)


def assert_same_outputs(a: Path, b: Path, ignore_input_columns: tuple[str, ...] = (), float_tol: float = 0.0) -> None:
    """Equal manifests and shards. `ignore_input_columns`: inputs.parquet columns that may differ (e.g. the
    attempts of a run that survived a fault); `float_tol`: relative tolerance of manifest floats (scores made
    by a model in another process), 0 = pandas' default."""
    import pandas.testing as pdt

    exact = dict(check_exact=False, rtol=float_tol, atol=1e-9) if float_tol else {}
    pdt.assert_frame_equal(_table(a, "windows", ["window_id"]), _table(b, "windows", ["window_id"]), **exact)
    pdt.assert_frame_equal(_table(a, "segments", ["segment_id"]), _table(b, "segments", ["segment_id"]), **exact)
    pdt.assert_frame_equal(_table(a, "inputs", ["path"]).drop(columns=list(ignore_input_columns)),
                           _table(b, "inputs", ["path"]).drop(columns=list(ignore_input_columns)))
    sa = sorted(p.name for p in (a / "shards").glob("*.tar"))
    sb = sorted(p.name for p in (b / "shards").glob("*.tar"))
    assert sa == sb and sa
    for name in sa:
        ma, mb = read_tar_members(a / "shards" / name), read_tar_members(b / "shards" / name)
        assert [n for n, _ in ma] == [n for n, _ in mb]  # same samples, same order, no duplicates
        for (n, da), (_, db) in zip(ma, mb):
            if n.endswith(".mp4"):
                # x264 may differ in a few bits on a process's first encode: compare decoded pictures
                cfg = DecodeConfig(short_side=0, max_fps=1000)
                fa, fb = decode_video(io.BytesIO(da), cfg), decode_video(io.BytesIO(db), cfg)
                assert fa.frames.shape == fb.frames.shape
                assert np.abs(fa.frames.astype(np.int16) - fb.frames).mean() < 1.0
            elif n.endswith(".flac"):
                # the same decode in two processes: compare samples (within one 16-bit step), not bytes
                import soundfile as sf

                xa, ra = sf.read(io.BytesIO(da), dtype="int16")
                xb, rb = sf.read(io.BytesIO(db), dtype="int16")
                assert ra == rb and xa.shape == xb.shape, n
                assert np.abs(xa.astype(np.int32) - xb).max() <= 1, n
            elif n.endswith(".json"):
                _assert_json_close(json.loads(da), json.loads(db), n)
            else:
                assert da == db, n


def _assert_json_close(a, b, where: str) -> None:
    """Equal structure and values; floats within 1e-6 relative (scores computed in another process)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_json_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_json_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9), where
    else:
        assert a == b, where


def _cmd(src, out, *extra):
    return [sys.executable, "-m", "pipelines.curate", "--src", str(src), "--out", str(out), "--local",
            "--no-progress", "--min-segments-per-class", "0", *extra]


def test_kill_minus_9_then_rerun_equals_uninterrupted_run(known_folder, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    full = tmp_path / "full"
    subprocess.run(_cmd(known_folder, full), check=True, env=env, cwd=REPO, capture_output=True)
    killed = tmp_path / "killed"
    for wait_for in (1, 3):  # kill after the first video, then again later in the rerun
        proc = subprocess.Popen(_cmd(known_folder, killed), env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if len(list((killed / "work" / "videos").glob("*/*.status.json"))) >= wait_for:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = len(list((killed / "work" / "videos").glob("*/*.status.json")))
    assert 1 <= done < 5, "the kill should land mid-run"
    subprocess.run(_cmd(known_folder, killed), check=True, env=env, cwd=REPO, capture_output=True)
    assert_same_outputs(full, killed)
    # a rerun of a finished run processes nothing and changes nothing
    res = subprocess.run(_cmd(known_folder, killed, "--dry-run"), check=True, env=env, cwd=REPO,
                         capture_output=True, text=True)
    assert "to process: 0" in res.stdout


def test_ray_runner_matches_local_runner(known_folder, tmp_path):
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    base = ["balance.min_segments_per_class=0"]
    run(load_config(None, base + ["runner.kind=local"], src=str(known_folder), out=str(local)), progress=False)
    run(load_config(None, base + ["runner.kind=ray", "runner.num_cpus=2", "runner.model_batch_videos=2"],
                    src=str(known_folder), out=str(ray_out)), progress=False)
    assert_same_outputs(local, ray_out)


def test_refilter_equals_full_run_with_the_same_thresholds(known_folder, tmp_path):
    loose, strict = tmp_path / "loose", tmp_path / "strict"
    base = ["runner.kind=local", "balance.min_segments_per_class=0"]
    run(load_config(None, base, src=str(known_folder), out=str(loose)), progress=False)
    # a full run with other thresholds (scores are identical, decisions differ)
    new = ["pixel_diff.min=0.0", "pixel_diff.max=0.5", "amplitude.min=0.5"]
    run(load_config(None, base + new, src=str(known_folder), out=str(strict)), progress=False)
    from pipelines.refilter import main as refilter

    assert refilter(["--out", str(loose), "--min-segments-per-class", "0", *new]) == 0
    assert_same_outputs(strict, loose)
    w = _table(loose, "windows", ["window_id"])
    assert set(w[w.video_id == "static_000000"].kept) == {True}  # static now passes pixel_diff.min=0


def test_changed_scoring_settings_refuse_to_mix_results(known_folder, tmp_path):
    out = tmp_path / "o"
    base = ["runner.kind=local", "balance.min_segments_per_class=0", "limit=1"]
    run(load_config(None, base, src=str(known_folder), out=str(out)), progress=False)
    with pytest.raises(UsageError, match="other settings"):
        run(load_config(None, base + ["windows.stride=1.0"], src=str(known_folder), out=str(out)), progress=False)


def test_ray_actor_pool_runs_a_model_stage_batched_across_videos(known_folder, tmp_path):
    """The actor-pool path (model stage between weight-free stages) on the embedded Ray cluster."""
    base = ["balance.min_segments_per_class=0", "stages=pixel_diff,psync,amplitude", "allow_random_weights=true",
            "psync.random_preset=tiny", "psync.checkpoint=''"]
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    run(load_config(None, base + ["runner.kind=local"], src=str(known_folder), out=str(local)), progress=False)
    run(load_config(None, base + ["runner.kind=ray", "runner.num_cpus=2", "runner.model_batch_videos=2"],
                    src=str(known_folder), out=str(ray_out)), progress=False)
    wl, wr = _table(local, "windows", ["window_id"]), _table(ray_out, "windows", ["window_id"])
    assert list(wl.window_id) == list(wr.window_id)
    assert (wl.pixel_diff == wr.pixel_diff).all() and (wl.amplitude == wr.amplitude).all()
    for w in (wl, wr):  # random init differs per process: check presence, range and the flag
        assert w.psync_a2v.between(0, 1).all() and w.psync_v2a.between(0, 1).all()
        assert set(w.random_weight_columns) == {"psync_a2v,psync_v2a"}
    stats = json.loads((ray_out / "stats.json").read_text())
    ps = next(s for s in stats["stages"] if s["name"] == "psync")
    assert ps["run"] and ps["random_weights"] and ps["windows_scored"] == len(wr)


def test_refilter_recuts_several_unstaged_segments_of_one_video(known_folder, tmp_path):
    """Tight first run (the cut video's two scenes are dropped, so nothing of it is staged), then refilter
    back to the defaults: both of its segments are cut again from one decode, equal to a default run."""
    default, tight = tmp_path / "default", tmp_path / "tight"
    base = ["runner.kind=local", "balance.min_segments_per_class=0"]
    run(load_config(None, base, src=str(known_folder), out=str(default)), progress=False)
    run(load_config(None, base + ["pixel_diff.max=0.015"], src=str(known_folder), out=str(tight)), progress=False)
    assert not _table(tight, "segments", ["segment_id"]).video_id.eq("cut_000000").any()
    from pipelines.refilter import main as refilter

    assert refilter(["--out", str(tight), "pixel_diff.max=0.15"]) == 0  # back to the default value
    assert_same_outputs(default, tight)
    assert _table(tight, "segments", ["segment_id"]).video_id.eq("cut_000000").sum() == 2
