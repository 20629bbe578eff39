"""Which failures are retried (a dead actor, worker or node; a storage connection error) and which are not
(a decode error, a bug), and GPU out-of-memory batch halving in the stage base."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import ray.exceptions as rex
import torch

from media.decode import DecodedVideo
from curate.records import Window
from curate.ray_runner import classify_failure
from curate.stage import Stage, is_out_of_memory


def _task_error(cause: BaseException) -> rex.RayTaskError:
    return rex.RayTaskError("finish_task", "Traceback ...", cause)


@pytest.mark.parametrize("error, reason", [
    (rex.ActorDiedError(), "actor died"),
    (rex.ActorUnavailableError("restarting", None), "actor restarting"),
    (rex.WorkerCrashedError(), "worker crashed"),
    (rex.NodeDiedError("node 1 died"), "node died"),
    (rex.ObjectLostError("ab" * 14, None, ""), "result lost with its node"),
    (rex.OwnerDiedError("ab" * 14, None, ""), "result lost with its node"),
    (_task_error(ConnectionError("connection reset by peer")), "storage or network error"),
    (_task_error(TimeoutError("read timed out")), "storage or network error"),
])
def test_transient_failures_are_retried(error, reason):
    assert classify_failure(error) == reason


@pytest.mark.parametrize("error", [
    _task_error(ValueError("bad value")),  # a bug: the same input fails the same way again
    _task_error(FileNotFoundError("gone")),
    _task_error(torch.cuda.OutOfMemoryError("CUDA out of memory")),  # left over after halving: not a crash
    KeyError("x"),
])
def test_deterministic_failures_are_not_retried(error):
    assert classify_failure(error) is None


def test_out_of_memory_is_recognised_by_type_and_by_message():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; ...)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(MemoryError())


@dataclass
class GreedyStage(Stage):
    """A model stage that runs out of GPU memory on forwards of more than `fits` windows."""

    name = "greedy_test"
    columns = ("greedy",)
    needs_model = True
    batch_size: int = 32
    fits: int = 5
    message_only: bool = False

    def __post_init__(self):
        self.calls: list[int] = []

    def score_batch(self, items):
        n = sum(len(ws) for _, ws in items)
        self.calls.append(min(n, self.batch_size))
        if min(n, self.batch_size) > self.fits:
            if self.message_only:
                raise RuntimeError("CUDA out of memory. Tried to allocate 1.50 GiB")
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
        return [{"greedy": np.array([w.start * 10 + v.fps for w in ws])} for v, ws in items]

    def decide(self, scores):
        return None


def _items(counts):
    out = []
    for k, n in enumerate(counts):
        v = DecodedVideo(np.zeros((1, 2, 2, 3), np.uint8), float(k + 1), None, 16000)
        out.append((v, [Window(f"v{k}", "p", 0, float(i), float(i) + 3.0) for i in range(n)]))
    return out


@pytest.mark.parametrize("message_only", [False, True])
def test_out_of_memory_halves_the_batch_until_it_fits(message_only):
    from curate.stage import StageTimer

    stage = GreedyStage(message_only=message_only)
    items = _items([7, 4, 9])  # 20 windows of three videos in one call
    timer = StageTimer()
    stage.run(items, timer)
    # 20 (too big) -> 10 (too big) -> 5 (fits), kept for the rest of the call: every window scored once,
    # each with its own score
    assert stage.calls == [20, 10, 5, 5, 5, 5]
    for v, ws in items:
        assert [w.scores["greedy"] for w in ws] == [pytest.approx(w.start * 10 + v.fps) for w in ws]
    assert timer.oom_halvings == 2
    assert timer.windows == 20 and stage.batch_size == 32  # the stage's own setting is left as it was


def test_out_of_memory_on_one_window_fails():
    stage = GreedyStage(fits=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        stage.run(_items([3]))
    assert stage.calls[-1] == 1  # halved down to a single window before giving up


def test_other_errors_are_not_halved():
    class Broken(GreedyStage):
        def score_batch(self, items):
            self.calls.append(1)
            raise ValueError("a bug")

    stage = Broken()
    with pytest.raises(ValueError):
        stage.run(_items([8]))
    assert stage.calls == [1]


def test_a_video_whose_stage_runs_out_of_memory_on_one_window_fails_alone(monkeypatch):
    """Through the per-video chain: the culprit fails with the reason, the other video is scored."""
    from curate.records import VideoInput
    from curate.video_task import VideoItem, run_stage_on_items

    class OneBad(GreedyStage):
        def score_batch(self, items):
            if any(v.fps == 1.0 for v, _ in items):
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return super().score_batch(items)

    its = [VideoItem(VideoInput("p", f"v{k}"), video=v, windows=ws) for k, (v, ws) in enumerate(_items([2, 3]))]
    run_stage_on_items(OneBad(), its, cascade=False)
    assert its[0].status == "failed" and "OutOfMemoryError" in its[0].error
    assert its[1].status == "ok" and all("greedy" in w.scores for w in its[1].windows)


def test_a_resume_retries_transient_failures_and_retry_failed_every_failure(tmp_path):
    """Status records of an earlier run: a transient failure is processed again by a plain rerun, a
    deterministic one only with `retry_failed`; finished videos never."""
    import json

    from curate import synthetic as syn
    from curate.config import load_config
    from curate.runner import plan_run, run
    from curate.video_task import WorkDir

    src = tmp_path / "src"
    for i in range(3):
        syn.write_video(src / f"v{i}_000000.mp4", syn.bouncing_video(3.5, seed=i)[0])
    base = ["runner.kind=local", "balance.min_segments_per_class=0", "report=false"]
    out = tmp_path / "out"
    run(load_config(None, base, src=str(src), out=str(out)), progress=False)
    work = WorkDir(out)
    for vid, retryable in (("v0_000000", True), ("v1_000000", False)):
        p = Path(work.status_path(vid))
        st = json.loads(p.read_text())
        st.update(status="failed", error="worker error (actor died, after 3 attempts): ActorDiedError", attempts=3,
                  retryable=retryable)
        p.write_text(json.dumps(st))
    plan = plan_run(load_config(None, base, src=str(src), out=str(out)))
    assert [d.inp.video_id for d in plan.todo] == ["v0_000000"] and plan.retried == 1
    assert "1 failed before, tried again" in plan.describe()
    again = load_config(None, base + ["retry_failed=true"], src=str(src), out=str(out))
    assert [d.inp.video_id for d in plan_run(again).todo] == ["v0_000000", "v1_000000"]
    stats = run(again, progress=False).stats
    assert stats["videos"]["ok"] == 3 and stats["videos"]["failed"] == 0


def test_a_decode_error_is_deterministic_and_a_storage_error_transient(tmp_path, monkeypatch):
    from curate import video_task
    from curate.config import CurateConfig
    from curate.records import VideoInput

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video\n" * 20)
    item = video_task.decode_and_window(VideoInput(str(bad), "bad"), CurateConfig())
    assert item.status == "failed" and not item.retryable  # the same bytes fail the same way: never retried

    def unreachable(*a, **k):
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(video_task, "decode_video", unreachable)
    item = video_task.decode_and_window(VideoInput("s3://bucket/v.mp4", "v"), CurateConfig())
    assert item.status == "failed" and item.retryable and "ConnectionError" in item.error

