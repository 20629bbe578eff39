"""Curation on a multi-node Ray cluster (three raylets on this machine) with a model stage, its inputs and
outputs on a local folder or on an S3-compatible endpoint started here: the model actor's process is killed
(SIGKILL) mid-run, a driver is killed and the run resumed, and a node that cannot write --out stops the run
before any work. Every video still ends `ok`, and the manifests and shards equal an uninterrupted run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from media import storage
from tests.curate.conftest import moto_s3
from curate import synthetic as syn
from curate.config import load_config
from curate.runner import run
from tests.curate.test_resume_and_ray import assert_same_outputs

REPO = Path(__file__).resolve().parents[2]
N_VIDEOS = 8
SETTINGS = ["stages=pixel_diff,amplitude,psync", "psync.allow_demo_checkpoint=true", "psync.device=cpu",
            "balance.min_segments_per_class=0", "report=false", "runner.model_batch_videos=1"]
RAY = ["runner.kind=ray", "runner.decode_cpus=0.5", "runner.max_in_flight=4"]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 with a bucket `bucket`; the AWS_* variables point every process at it."""
    with moto_s3("bucket") as env:
        yield env


@pytest.fixture(scope="module")
def cluster(s3):
    """Three nodes with their own raylets (a head and two workers), one CPU each; the driver connects to it."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=c.address, include_dashboard=False, logging_level=logging.ERROR)
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src")
    for i in range(N_VIDEOS):
        syn.write_video(root / f"class{i % 2}" / f"vid{i:02d}_000000.mp4", syn.bouncing_video(4.0, seed=i)[0])
    return root


@pytest.fixture(scope="module")
def s3_videos(s3, videos) -> str:
    import fsspec

    fs = fsspec.filesystem("s3")
    for p in sorted(videos.rglob("*.mp4")):
        fs.put_file(str(p), f"bucket/src/{p.relative_to(videos).as_posix()}")
    return "s3://bucket/src"


def _cfg(src, out, *extra):
    return load_config(None, [*SETTINGS, *extra], src=str(src), out=str(out))


def _done(out) -> int:
    return len(storage.find_files(storage.join(out, "work", "videos"), ".status.json"))


def _stage_actor_pids(cluster, besides: set[int] = frozenset()) -> set[int]:
    """Processes of model actors of this test's cluster (descendants of its raylets, never other users'),
    except `besides` (an earlier run's actor may still be shutting down)."""
    c, _ = cluster
    pids = set()
    for node in c.list_all_nodes():
        for info in node.all_processes.get("raylet", []):
            for p in psutil.Process(info.process.pid).children(recursive=True):
                try:
                    if "StageActor" in " ".join(p.cmdline()) and p.pid not in besides:
                        pids.add(p.pid)
                except psutil.Error:
                    pass
    return pids


def _kill_actor_when(cluster, out, done_at: int, started: threading.Thread | subprocess.Popen, before: set[int]) -> int:
    """SIGKILL the model actor's process once `done_at` videos are finished (`before`: actor processes that
    existed before this run started, not its own)."""
    deadline = time.time() + 180
    while time.time() < deadline and _done(out) < done_at:
        assert (started.poll() is None) if isinstance(started, subprocess.Popen) else started.is_alive()
        time.sleep(0.05)
    pids = _stage_actor_pids(cluster, before)
    assert len(pids) == 1, pids
    pid = pids.pop()
    os.kill(pid, signal.SIGKILL)
    return pid


def _run_in_thread(cfg) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target():
        try:
            box["result"] = run(cfg, progress=False)
        except BaseException as e:  # surfaced by the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)  # a failed test must not leave the process waiting
    t.start()
    return t, box


def _local_copy(out: str, dest: Path) -> Path:
    """The outputs of an object-storage run as a local folder (to compare with a local reference)."""
    import fsspec

    fs = fsspec.filesystem("s3")
    key = out.split("://", 1)[1]
    dest.mkdir(parents=True)
    for name in ("windows.parquet", "segments.parquet", "inputs.parquet", "stats.json"):
        fs.get_file(f"{key}/{name}", str(dest / name))
    (dest / "shards").mkdir(parents=True)
    for p in fs.ls(f"{key}/shards"):
        fs.get_file(p, str(dest / "shards" / p.rsplit("/", 1)[1]))
    return dest


def _assert_all_ok_and_equal(reference: Path, out: Path) -> dict:
    inputs = pq.read_table(out / "inputs.parquet").to_pandas()
    assert len(inputs) == N_VIDEOS and set(inputs.status) == {"ok"}, inputs[["video_id", "status", "error"]]
    assert_same_outputs(reference, out, ignore_input_columns=("attempts",), float_tol=1e-6)
    return json.loads((out / "stats.json").read_text())


def test_killed_model_actor_costs_no_video(cluster, videos, tmp_path):
    reference = tmp_path / "reference"
    run(_cfg(videos, reference, "runner.kind=local"), progress=False)
    out = tmp_path / "killed"
    before = _stage_actor_pids(cluster)
    thread, box = _run_in_thread(_cfg(videos, out, *RAY))
    _kill_actor_when(cluster, out, 2, thread, before)
    thread.join(timeout=300)
    assert "error" not in box, box.get("error")
    stats = _assert_all_ok_and_equal(reference, out)
    f = stats["faults"]
    assert f["actor_restarts"] == 1 and f["retries"] >= 1 and f["videos_retried"] >= 1, f  # one kill, one restart
    assert set(f["retry_reasons"]) <= {"actor died", "actor restarting"}, f
    inputs = pq.read_table(out / "inputs.parquet").to_pandas()
    assert inputs.attempts.max() == 2 and not inputs.retryable.any()
    assert stats["throughput"]["stage_windows_per_s"]["psync"] > 0


def test_object_storage_with_a_killed_driver_and_a_killed_actor(cluster, s3_videos, tmp_path):
    reference = tmp_path / "reference"
    run(_cfg(s3_videos, reference, "runner.kind=local"), progress=False)  # read through ranged GETs
    out = "s3://bucket/out"
    c, _ = cluster
    # 1. the driver is killed mid-run (kill -9 of the command)
    cmd = [sys.executable, "-m", "pipelines.curate", "--src", s3_videos, "--out", out, "--address", c.address,
           "--no-progress", *SETTINGS, *RAY]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and _done(out) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _done(out)
    assert 2 <= first < N_VIDEOS, "the kill should land mid-run"
    # 2. the rerun resumes; its model actor is killed too
    before = _stage_actor_pids(cluster)
    thread, box = _run_in_thread(_cfg(s3_videos, out, *RAY))
    _kill_actor_when(cluster, out, first + 1, thread, before)
    thread.join(timeout=300)
    assert "error" not in box, box.get("error")
    assert box["result"].stats["faults"]["actor_restarts"] >= 1
    _assert_all_ok_and_equal(reference, _local_copy(out, tmp_path / "copy"))
    # nothing partial is left in the bucket: every staged object belongs to a finished video
    statuses = storage.find_files(storage.join(out, "work", "videos"), ".status.json")
    assert len(statuses) == N_VIDEOS
    assert not storage.find_files(storage.join(out, "work", "probe"))
    # re-applying the same thresholds in the bucket rebuilds the same outputs
    from pipelines.refilter import main as refilter

    assert refilter(["--out", out]) == 0
    _assert_all_ok_and_equal(reference, _local_copy(out, tmp_path / "copy2"))


def test_a_node_that_cannot_write_out_stops_the_run_before_any_work(cluster, videos, tmp_path, capsys):
    """A node that sees --src (a folder every node has) but whose processes reach no object store for --out
    (here: its raylet points at a closed port) fails the probe: one `error:` line naming the node and what it
    cannot do, exit code 2, nothing written."""
    import ray

    from pipelines.curate import main as curate

    c, _ = cluster
    saved = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # the discard port: connection refused
    try:
        bad = c.add_node(num_cpus=1)
    finally:
        os.environ["AWS_ENDPOINT_URL"] = saved
    try:
        c.wait_for_nodes()
        out = "s3://bucket/probe-out"
        rc = curate(["--src", str(videos), "--out", out, "--address", c.address, "--no-progress", *SETTINGS, *RAY])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2
        assert err[-1].startswith(f"error: node {bad.node_ip_address} ({bad.node_id[:8]}) ")
        assert f"--out {out}" in err[-1] and "--src" not in err[-1].split(";")[0]
        assert "every node of the cluster must see --src and write --out" in err[-1]
        assert not storage.exists(out) and not storage.find_files(out)
    finally:
        c.remove_node(bad)
    assert ray.is_initialized()


def test_a_video_out_of_attempts_fails_with_the_reason_and_a_resume_retries_it(cluster, videos, tmp_path):
    """runner.max_attempts=1: the videos in flight on the killed actor fail, saying why and after how many
    attempts, marked retryable; the same command again processes exactly those and ends like a clean run."""
    reference = tmp_path / "reference"
    run(_cfg(videos, reference, "runner.kind=local"), progress=False)
    out = tmp_path / "out"
    before = _stage_actor_pids(cluster)
    thread, box = _run_in_thread(_cfg(videos, out, *RAY, "runner.max_attempts=1"))
    _kill_actor_when(cluster, out, 2, thread, before)
    thread.join(timeout=300)
    assert "error" not in box, box.get("error")
    inputs = pq.read_table(out / "inputs.parquet").to_pandas()
    failed = inputs[inputs.status == "failed"]
    assert len(failed) >= 1 and failed.retryable.all() and (failed.attempts == 1).all()
    assert failed.error.str.contains(r"worker error \(actor (?:died|restarting), after 1 attempts\)").all(), failed.error
    from curate.runner import plan_run

    plan = plan_run(_cfg(videos, out, *RAY))
    assert sorted(d.inp.video_id for d in plan.todo) == sorted(failed.video_id) and plan.retried == len(failed)
    run(_cfg(videos, out, *RAY), progress=False)
    _assert_all_ok_and_equal(reference, out)
