"""The model-backed filters end to end with tiny random-init models, their fail-fast weights check, and
the paper's thresholds applied inclusively (with a fake deterministic scorer)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from curate.stage import StageUnavailable, all_columns, build_stage
from curate.video_task import apply_decisions, run_stage_on_items


def _run(name, items, params):
    stage = build_stage(name, params[name])
    stage.check()
    assert stage.random_weights, "no weights given: the stage must say it runs with random weights"
    stage.setup()
    run_stage_on_items(stage, items, cascade=False)
    assert all(it.status == "ok" for it in items), [it.error for it in items]
    apply_decisions([w for it in items for w in it.windows], [stage])
    return stage, [w for it in items for w in it.windows]


def test_registry_order_and_columns():
    assert all_columns() == ["pixel_diff", "clip_diff", "amplitude", "ia", "it", "psync_a2v", "psync_v2a"]
    assert build_stage("clip_diff").params()["model"] == "ViT-B-32"
    assert build_stage("clip_diff").resources.num_cpus < 1  # fractional: a 2-CPU machine cannot deadlock


def test_clip_diff_tiny_end_to_end(fresh_items, tiny_params):
    stage, windows = _run("clip_diff", fresh_items, tiny_params)
    vals = np.array([w.scores["clip_diff"] for w in windows])
    assert vals.shape == (len(windows),) and np.all((vals >= 0) & (vals <= 2.0 + 1e-6))
    assert np.all(vals > 0)  # the square moves: consecutive features differ
    for w in windows:
        x = w.scores["clip_diff"]
        expect = None if 0.17 <= x <= 0.55 else ("clip_diff_low" if x < 0.17 else "clip_diff_high")
        assert w.drop_reason == expect
    # same frames as pixel_diff, scored deterministically: a second run gives the same numbers
    again = stage.score_batch([(it.video, it.windows) for it in fresh_items])
    np.testing.assert_allclose(np.concatenate([r["clip_diff"] for r in again]), vals, atol=1e-5)
    # a stage travels to workers without its model
    assert not hasattr(pickle.loads(pickle.dumps(stage)), "_encoder")


def test_clip_diff_loads_local_checkpoint(tmp_path, fresh_items):
    import open_clip
    import torch

    from curate.models.clip import TINY_CFG

    torch.manual_seed(0)
    path = tmp_path / "tiny_clip.pt"
    torch.save(open_clip.CLIP(**TINY_CFG).state_dict(), path)
    stage = build_stage("clip_diff", {"model": "tiny", "pretrained": str(path), "device": "cpu"})
    stage.check()
    assert not stage.random_weights
    stage.setup()
    run_stage_on_items(stage, fresh_items[:1], cascade=False)
    assert all(w.scores["clip_diff"] is not None for w in fresh_items[0].windows)


def test_imagebind_tiny_end_to_end(fresh_items, tiny_params):
    _, windows = _run("imagebind", fresh_items, tiny_params)
    ia = np.array([w.scores["ia"] for w in windows])
    assert np.all((ia >= -1 - 1e-6) & (ia <= 1 + 1e-6))
    for w in windows:
        if w.label is None:  # no class label: no IT, dropped as it_missing (unless IA already failed)
            assert w.scores["it"] is None and "it_missing" in w.drop_reasons or w.drop_reason == "ia_low"
        else:
            assert -1 - 1e-6 <= w.scores["it"] <= 1 + 1e-6
        expect = "ia_low" if w.scores["ia"] < 0.15 else ("it_missing" if w.scores["it"] is None else ("it_low" if w.scores["it"] < 0.22 else None))
        assert w.drop_reason == expect


def test_psync_tiny_end_to_end(fresh_items, tiny_params):
    pytest.importorskip("sync_classifier.score")
    _, windows = _run("psync", fresh_items, tiny_params)
    p = np.array([[w.scores["psync_a2v"], w.scores["psync_v2a"]] for w in windows])
    assert p.shape == (len(windows), 2) and np.all((p >= 0) & (p <= 1))
    for w in windows:
        a, v = w.scores["psync_a2v"], w.scores["psync_v2a"]
        assert w.drop_reason == ("psync_a2v_low" if a < 0.341 else ("psync_v2a_low" if v < 0.341 else None))


@pytest.mark.parametrize(
    "name,params,needle",
    [
        ("clip_diff", {"model": "tiny", "pretrained": "/nonexistent/clip.pt"}, "clip_diff.pretrained="),
        ("clip_diff", {"model": "ViT-B-32", "pretrained": "/nonexistent/open_clip_pytorch_model.bin"}, "clip_diff.pretrained="),
        ("imagebind", {"checkpoint": "/nonexistent/imagebind_huge.pth"}, "imagebind.checkpoint="),
        ("psync", {"checkpoint": "/nonexistent/sync_dir"}, "psync.checkpoint="),
    ],
)
def test_missing_weights_fail_early(name, params, needle):
    stage = build_stage(name, params)
    with pytest.raises(StageUnavailable) as e:
        stage.check()
    msg = str(e.value)
    assert needle in msg and "--allow-random-weights" in msg and "/nonexistent/" in msg
    assert not stage.random_weights


# ------------------------------------------------------------------ thresholds at the paper's boundaries

EPS = 1e-9
CASES = {  # stage -> list of (scores, expected drop reason)
    "clip_diff": [
        ({"clip_diff": 0.17 - EPS}, "clip_diff_low"), ({"clip_diff": 0.17}, None),
        ({"clip_diff": 0.55}, None), ({"clip_diff": 0.55 + EPS}, "clip_diff_high"),
    ],
    "imagebind": [
        ({"ia": 0.15, "it": 0.22}, None), ({"ia": 0.15 - EPS, "it": 0.9}, "ia_low"),
        ({"ia": 0.9, "it": 0.22 - EPS}, "it_low"), ({"ia": 0.9, "it": np.nan}, "it_missing"),
    ],
    "psync": [
        ({"psync_a2v": 0.341, "psync_v2a": 0.341}, None), ({"psync_a2v": 0.341 - EPS, "psync_v2a": 0.9}, "psync_a2v_low"),
        ({"psync_a2v": 0.9, "psync_v2a": 0.341 - EPS}, "psync_v2a_low"),
    ],
}


class FakeSyncScorer:
    """The SyncScorer API with deterministic output: P_Sync looked up by the request's centre time."""

    def __init__(self, table):
        self.table = table

    def psync(self, requests, shift=0.25, batch_size=32):
        assert shift == 0.25
        return np.array([self.table[round(t, 3)] for _, t in requests])


def test_paper_thresholds_inclusive(fresh_items, monkeypatch):
    """Scores exactly at 0.17 / 0.55 / 0.15 / 0.22 / 0.341 are kept; a hair beyond is dropped."""
    item = fresh_items[0]
    for name, cases in CASES.items():
        stage = build_stage(name, {"allow_random_weights": True})  # paper defaults for every threshold
        ws = item.windows[: len(cases)]
        for w in item.windows:
            w.scores, w.drop_reason, w.drop_reasons = {}, None, []
        if name == "psync":  # the real score_batch, fed by a fake scorer
            stage._scorer = FakeSyncScorer({round(0.5 * (w.start + w.end), 3): [c["psync_a2v"], c["psync_v2a"]] for w, (c, _) in zip(ws, cases)})
        else:
            by_start = {w.start: c for w, (c, _) in zip(ws, cases)}
            monkeypatch.setattr(stage, "score_batch", lambda its, s=stage, b=by_start: [
                {col: np.array([b[w.start][col] for w in wl]) for col in s.columns} for _, wl in its])
        item.windows = ws
        run_stage_on_items(stage, [item], cascade=True)
        got = [w.drop_reason for w in ws]
        assert got == [r for _, r in cases], (name, got)
        apply_decisions(ws, [stage])  # the refilter path (decide on stored scores) agrees
        assert [w.drop_reason for w in ws] == [r for _, r in cases]


def test_imagebind_and_psync_load_local_checkpoints(tmp_path, fresh_items):
    """The real-weights path: a checkpoint on disk is used (no random-weights flag)."""
    import torch

    from curate.models.imagebind import build_model

    torch.manual_seed(0)
    ib = tmp_path / "imagebind_tiny.pth"
    torch.save(build_model("tiny").state_dict(), ib)
    stages = [build_stage("imagebind", {"preset": "tiny", "checkpoint": str(ib), "device": "cpu"})]
    score_mod = pytest.importorskip("sync_classifier.score")
    from sync_classifier.config import PRESETS
    from sync_classifier.model import SyncClassifier

    SyncClassifier(PRESETS["tiny"]().model).save_pretrained(tmp_path / "sync")
    cfg = json.loads((tmp_path / "sync" / "config.json").read_text())  # as a classifier trained on VGGSS says
    (tmp_path / "sync" / "config.json").write_text(json.dumps({**cfg, "training_data": "vggss"}))
    stages.append(build_stage("psync", {"checkpoint": str(tmp_path / "sync"), "device": "cpu"}))
    item = fresh_items[0]
    item.windows = item.windows[:2]
    for st in stages:
        st.check()
        assert not st.random_weights
        st.setup()
        run_stage_on_items(st, [item], cascade=False)
        assert item.status == "ok", item.error
    assert isinstance(stages[1]._scorer, score_mod.SyncScorer)
    assert all(w.scores[c] is not None for w in item.windows for c in ("ia", "it", "psync_a2v", "psync_v2a"))
