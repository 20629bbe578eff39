"""Every stage of the paper's chain, end to end through the pipeline on Ray, with tiny random-init models,
on real and synthetic videos of the sample set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from curate.config import PAPER_STAGES, load_config
from curate.runner import run

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "clip_diff.model=tiny", "clip_diff.pretrained=''", "clip_diff.device=cpu",
    "imagebind.preset=tiny", "imagebind.checkpoint=''", "imagebind.device=cpu",
    "psync.random_preset=tiny", "psync.checkpoint=''", "psync.device=cpu",
]


def test_paper_chain_on_ray_with_tiny_models(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("bbb5s6ch000_000000.mp4", "strikes0000_000000.mp4", "stillimage0_000000.mp4"):
        shutil.copy(REPO / "sample" / "videos" / name, src / name)
    shutil.copy(REPO / "sample" / "vggsound_sample.csv", tmp_path / "labels.csv")
    out = tmp_path / "out"
    cfg = load_config(None, [
        f"stages={','.join(PAPER_STAGES)}", "allow_random_weights=true", "balance.min_segments_per_class=0",
        "runner.kind=ray", "runner.num_cpus=2", "runner.model_batch_videos=2", *TINY,
    ], src=str(src), out=str(out), csv=str(tmp_path / "labels.csv"))
    result = run(cfg, progress=False)
    w = pq.read_table(out / "windows.parquet").to_pandas()
    assert len(w) > 10 and set(w.video_id) == {"bbb5s6ch000_000000", "strikes0000_000000", "stillimage0_000000"}
    # every window has every score, in its range
    assert w.pixel_diff.between(0, 1).all() and w.amplitude.between(0, 1).all()
    assert w.clip_diff.between(0, 2).all()
    assert w.ia.between(-1, 1).all() and w.it.between(-1, 1).all()
    assert w.psync_a2v.between(0, 1).all() and w.psync_v2a.between(0, 1).all()
    # the decisions are exactly the configured thresholds, in pipeline order
    first = []
    for _, r in w.iterrows():
        reasons = []
        if r.pixel_diff < 0.01: reasons.append("pixel_diff_low")
        if r.pixel_diff > 0.15: reasons.append("pixel_diff_high")
        if r.clip_diff < 0.17: reasons.append("clip_diff_low")
        if r.clip_diff > 0.55: reasons.append("clip_diff_high")
        if r.amplitude < 0.03: reasons.append("amplitude_low")
        if r.ia < 0.15: reasons.append("ia_low")
        if r.it < 0.22: reasons.append("it_low")
        if r.psync_a2v < 0.341: reasons.append("psync_a2v_low")
        if r.psync_v2a < 0.341: reasons.append("psync_v2a_low")
        first.append(reasons[0] if reasons else None)
    assert list(w.drop_reason.where(w.drop_reason.notna(), None)) == first
    # random weights are flagged everywhere a person would look
    flagged = set(w.random_weight_columns.iloc[0].split(","))
    assert flagged == {"clip_diff", "ia", "it", "psync_a2v", "psync_v2a"}
    stats = json.loads((out / "stats.json").read_text())
    assert {s["name"] for s in stats["stages"] if s["random_weights"]} == {"clip_diff", "imagebind", "psync"}
    assert "RANDOM WEIGHTS" in result.summary()
    assert "not meaningful" in (out / "report.html").read_text().lower()
