"""P_Sync provenance: a sync classifier checkpoint says what it was trained on; a synthetic-only (or unknown)
one is not curation-grade, needs an explicit opt-in like random weights, and its scores are flagged in
windows.parquet, stats.json, the summary, the report and the shard JSON (also after refilter)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")

from curate import synthetic as syn  # noqa: E402
from curate.config import load_config  # noqa: E402
from curate.filters.psync import SHIPPED_CHECKPOINT, checkpoint_training_data, resolve_sync_checkpoint  # noqa: E402
from curate.runner import run  # noqa: E402
from media.shards import iter_segments  # noqa: E402
from curate.stage import StageUnavailable, build_stage  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _tiny_checkpoint(path: Path, training_data: str | None) -> Path:
    from sync_classifier.config import PRESETS
    from sync_classifier.model import SyncClassifier

    SyncClassifier(PRESETS["tiny"]().model).save_pretrained(path)
    cfg = {k: v for k, v in json.loads((path / "config.json").read_text()).items() if k != "training_data"}
    if training_data is not None:
        cfg["training_data"] = training_data
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def test_shipped_checkpoint_says_synthetic():
    path, problem = resolve_sync_checkpoint(SHIPPED_CHECKPOINT)
    assert problem is None
    assert checkpoint_training_data(path) == "synthetic"


@pytest.mark.parametrize("training_data", ["synthetic", None])
def test_not_curation_grade_checkpoint_needs_the_opt_in(tmp_path, training_data):
    ckpt = _tiny_checkpoint(tmp_path / "sync", training_data)
    stage = build_stage("psync", {"checkpoint": str(ckpt), "device": "cpu"})
    stage.allow_random_weights = True  # the random-weights opt-in is another decision: not enough here
    expected = training_data or "unknown"
    with pytest.raises(StageUnavailable, match=rf"trained on '{expected}' data.*psync.allow_demo_checkpoint=true"):
        stage.check()
    ok = build_stage("psync", {"checkpoint": str(ckpt), "device": "cpu", "allow_demo_checkpoint": True})
    ok.check()
    assert not ok.random_weights and not ok.curation_grade
    assert ok.provenance() == {"checkpoint": str(ckpt), "training_data": expected, "curation_grade": False}


def test_real_footage_checkpoint_is_curation_grade(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "sync", "vggss")
    stage = build_stage("psync", {"checkpoint": str(ckpt), "device": "cpu"})
    stage.check()
    assert stage.curation_grade and stage.provenance()["training_data"] == "vggss"


def test_scorer_exposes_training_data_and_grade():
    from sync_classifier.config import PRESETS
    from sync_classifier.model import SyncClassifier
    from sync_classifier.score import SyncScorer

    model = SyncClassifier(PRESETS["tiny"]().model)
    scorer = SyncScorer.from_model(model)
    assert scorer.training_data == "unknown" and scorer.curation_grade is False
    for data, grade in (("synthetic", False), ("vggss", True), ("avsync15", True)):
        model.training_data = data
        scorer = SyncScorer.from_model(model)
        assert (scorer.training_data, scorer.curation_grade) == (data, grade)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The shipped synthetic-only classifier on a short sounding video, opted in as a demonstration."""
    src = tmp_path_factory.mktemp("src")
    syn.write_video(src / "dog barking" / "bounce.mp4", syn.bouncing_video(4.0, seed=3)[0])
    out = tmp_path_factory.mktemp("out")
    cfg = load_config(None, ["runner.kind=local", "balance.min_segments_per_class=0", "stages=pixel_diff,psync",
                             "psync.allow_demo_checkpoint=true", "psync.device=cpu", "psync.min=0",
                             "pixel_diff.min=0", "pixel_diff.max=1"], src=str(src), out=str(out))
    return out, run(cfg, progress=False)


def test_demo_checkpoint_scores_are_flagged_everywhere(demo_run):
    out, result = demo_run
    w = pq.read_table(out / "windows.parquet").to_pandas()
    assert len(w) and w.psync_a2v.notna().all()
    assert set(w.not_curation_grade_columns) == {"psync_a2v,psync_v2a"}
    assert w.random_weight_columns.isna().all()  # not random: a different flag
    stats = json.loads((out / "stats.json").read_text())
    assert stats["not_curation_grade_columns"] == ["psync_a2v", "psync_v2a"]
    assert stats["models"]["psync"]["training_data"] == "synthetic"
    assert stats["models"]["psync"]["curation_grade"] is False
    ps = next(s for s in stats["stages"] if s["name"] == "psync")
    assert ps["not_curation_grade"] and not ps["random_weights"]
    assert "NOT CURATION-GRADE: checkpoint trained on 'synthetic' data" in result.summary()
    assert "id='not-curation-grade'" in (out / "report.html").read_text()
    samples = list(iter_segments(sorted(str(p) for p in (out / "shards").glob("*.tar"))))
    assert samples
    for s in samples:
        meta = s.meta
        assert meta["not_curation_grade"] == ["psync_a2v", "psync_v2a"]
        assert meta["models"]["psync"]["training_data"] == "synthetic"


def test_refilter_keeps_the_flags(demo_run):
    from pipelines.refilter import main

    out, _ = demo_run
    assert main(["--out", str(out), "psync.min=0.0", "--no-recut"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["not_curation_grade_columns"] == ["psync_a2v", "psync_v2a"]
    assert stats["models"]["psync"]["training_data"] == "synthetic"
