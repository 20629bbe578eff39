"""The curation report from small synthetic run outputs: content, robustness, and a real render in
headless Chromium (figures decoded, no script errors)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from media.encode import encode_mp4
from curate.report import grab_frame, write_report

CHROMIUM = "/usr/bin/chromium"
SCORES = ["pixel_diff", "clip_diff", "amplitude", "ia", "it", "psync_a2v", "psync_v2a"]


def _colour_video(path, seconds=4.0, fps=10):
    """Each second has its own colour, so a grabbed frame tells which second it came from."""
    n = int(seconds * fps)
    frames = np.zeros((n, 48, 64, 3), np.uint8)
    for k in range(n):
        frames[k, ..., k // fps % 3] = 220
    path.write_bytes(encode_mp4(frames, fps, np.zeros(int(seconds * 16000), np.float32), 16000))
    return str(path)


def make_run(out, random=True):
    """A small run output: 2 videos (one failed), 6 windows, 2 segments, stats as the pipeline writes."""
    out.mkdir(parents=True, exist_ok=True)
    src = _colour_video(out / "vidA_000001.mp4")
    rng = np.random.default_rng(0)
    reasons = [None, None, "clip_diff_high", "ia_low", "psync_a2v_low", "pixel_diff_low"]
    rows = {k: [] for k in ["video_id", "window_id", "path", "scene", "start", "end", "label", "split", "kept",
                            "drop_reason", "drop_reasons", *SCORES, "random_weight_columns"]}
    for i, r in enumerate(reasons):
        s = 0.5 * (i % 3)
        rows["video_id"].append("vidA_000001"); rows["window_id"].append(f"vidA_000001-{int(s * 1000):08d}")
        rows["path"].append(src); rows["scene"].append(0); rows["start"].append(s); rows["end"].append(s + 3.0)
        rows["label"].append("dog barking" if i % 2 else "playing piano"); rows["split"].append("train")
        rows["kept"].append(r is None); rows["drop_reason"].append(r); rows["drop_reasons"].append(r)
        for c in SCORES:
            rows[c].append(None if c == "psync_v2a" and i == 5 else float(rng.uniform(0, 1)))
        rows["random_weight_columns"].append("clip_diff,ia,it" if random else None)
    pq.write_table(pa.table(rows), out / "windows.parquet")
    pq.write_table(pa.table({
        "segment_id": ["a", "b"], "video_id": ["vidA_000001"] * 2, "path": [src] * 2, "scene": [0, 0],
        "start": [0.0, 0.5], "end": [3.0, 3.5], "duration": [3.0, 3.0], "label": ["playing piano", "dog barking"],
        "split": ["train", "train"], "kept": [True, False], "drop_reason": [None, "class_below_min_segments"],
    }), out / "segments.parquet")
    pq.write_table(pa.table({
        "path": [src, "/data/broken.mp4"], "video_id": ["vidA_000001", "broken"], "label": ["x", "y"],
        "split": ["train", None], "status": ["ok", "failed"], "reason": [None, None],
        "error": [None, "MediaError: <no video stream> & friends"], "duration": [4.0, None],
        "num_windows": [6, 0], "num_kept_windows": [2, 0],
    }), out / "inputs.parquet")
    stages = [
        {"name": "pixel_diff", "columns": ["pixel_diff"], "params": {"min": 0.01, "max": 0.15}, "run": True,
         "input": 6, "kept": 5, "dropped": {"pixel_diff_low": 1}, "seconds": 0.1, "random_weights": False},
        {"name": "clip_diff", "columns": ["clip_diff"], "params": {"min": 0.17, "max": 0.55}, "run": True,
         "input": 5, "kept": 4, "dropped": {"clip_diff_high": 1}, "seconds": 1.0, "random_weights": random},
        {"name": "amplitude", "columns": ["amplitude"], "params": {"min": 0.03}, "run": True,
         "input": 4, "kept": 4, "dropped": {}, "seconds": 0.0, "random_weights": False},
        {"name": "imagebind", "columns": ["ia", "it"], "params": {"ia_min": 0.15, "it_min": 0.22}, "run": True,
         "input": 4, "kept": 3, "dropped": {"ia_low": 1}, "seconds": 3.0, "random_weights": random},
        {"name": "psync", "columns": ["psync_a2v", "psync_v2a"], "params": {"min": 0.341}, "run": True,
         "input": 3, "kept": 2, "dropped": {"psync_a2v_low": 1}, "seconds": 2.0, "random_weights": False},
    ]
    stats = {"stages": stages, "videos": {"total": 2, "ok": 1, "dropped": 0, "failed": 1},
             "windows": {"total": 6, "kept": 2}, "segments": {"merged": 2, "kept": 1},
             "classes": {"before": {"playing piano": 1, "dog barking": 1}, "after": {"playing piano": 1},
                         "dropped": ["dog barking"], "min_segments_per_class": 2}}
    (out / "stats.json").write_text(json.dumps(stats))
    return out


def test_report_content(tmp_path):
    page = write_report(make_run(tmp_path / "out")).read_text()
    figs = re.findall(r'<img class="fig"[^>]*src="data:image/png;base64,', page)
    assert len(figs) == 3 + 7  # funnel, keep rates, classes + one histogram per score column
    assert len(re.findall(r"data:image/jpeg;base64,", page)) == 6  # every window is an example here
    assert 'id="random-weights"' in page or "id='random-weights'" in page
    banner = page.split("random-weights", 1)[1].split("</div>", 1)[0]
    assert all(f"<code>{c}</code>" in banner for c in ("clip_diff", "ia", "it")) and "psync" not in banner
    assert "RANDOM WEIGHTS" in page and "not meaningful" in page.lower()
    assert "ia=" in page and "(random weights)" in page.split("ia=", 1)[1].split(",", 1)[0]
    for reason in ("kept", "clip_diff_high", "ia_low", "psync_a2v_low", "pixel_diff_low"):
        assert f"<h3>{reason} " in page
    assert "/data/broken.mp4" in page and "&lt;no video stream&gt; &amp; friends" in page  # failure table, escaped
    assert "dog barking" in page.split("category balance", 1)[1]
    assert "http://" not in page and "https://" not in page  # self-contained


def test_report_without_random_weights_has_no_banner(tmp_path):
    page = write_report(make_run(tmp_path / "out", random=False)).read_text()
    assert "random-weights" not in page


def test_report_robust_to_missing_outputs(tmp_path):
    assert "no windows" in write_report(tmp_path).read_text()  # nothing at all
    out = make_run(tmp_path / "partial")
    (out / "stats.json").unlink()
    (out / "segments.parquet").unlink()
    t = pq.read_table(out / "windows.parquet")  # a stage not run: its columns all null
    t = t.set_column(t.schema.get_field_index("ia"), "ia", pa.array([None] * t.num_rows, pa.float64()))
    pq.write_table(t, out / "windows.parquet")
    page = write_report(out).read_text()
    assert "histogram ia" not in page and "histogram clip_diff" in page
    pq.write_table(t.slice(0, 0), out / "windows.parquet")  # empty table
    assert "no scores recorded" in write_report(out).read_text()


def test_grab_frame_seeks_to_the_time(tmp_path):
    path = _colour_video(tmp_path / "v.mp4")
    for t, channel in ((0.5, 0), (1.5, 1), (2.5, 2)):
        img = grab_frame(path, t)
        assert img is not None and int(np.argmax(img.reshape(-1, 3).mean(0))) == channel
    assert grab_frame(str(tmp_path / "missing.mp4"), 1.0) is None


def test_report_renders_in_headless_chromium(tmp_path):
    assert shutil.which(CHROMIUM) or shutil.which("chromium"), (
        "Chromium is required for this test: apt-get update && apt-get install -y chromium (as root)"
    )
    report = write_report(make_run(tmp_path / "out"))
    cmd = [
        shutil.which(CHROMIUM) or shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000", "--dump-dom", report.as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    total = re.search(r'data-images-total="(\d+)"', dom)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    errors = re.search(r'data-errors="(\d+)"', dom)
    assert total and loaded and errors, "the page's load handler did not run:\n" + dom[:500] + res.stderr[-1000:]
    assert int(total.group(1)) == 16 and int(loaded.group(1)) == 16, (total.group(1), loaded.group(1))
    assert int(errors.group(1)) == 0
    assert "Curation report" in dom and "Score distributions" in dom
