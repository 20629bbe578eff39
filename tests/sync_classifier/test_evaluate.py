import json

import numpy as np
import pytest
import torch

from media.encode import encode_mp4
from sync_classifier.config import ClipSpec
from sync_classifier.data import EVAL_SEED_BASE
from sync_classifier.evaluate import chance_level, evaluate_model, main, offsets_that_fit, scores
from sync_classifier.families import make_family_video


def test_chance_levels():
    assert chance_level(31, 5, "asva") == pytest.approx(11 / 31)
    assert chance_level(31, 5, "all") == pytest.approx((31 * 11 - 2 * 15) / 31**2)
    assert chance_level(25, 5, "asva") == pytest.approx(11 / 25)


def test_offsets_that_fit_short_segments():
    spec = ClipSpec()
    assert offsets_that_fit(3.2, spec, 31, 0.04, 13) == 31
    assert offsets_that_fit(3.0, spec, 31, 0.04, 13) == 25  # 24 * 0.04 + 2 = 2.96 s
    assert offsets_that_fit(2.4, spec, 31, 0.04, 13) == 0  # 13 offsets need 2.48 s


def test_protocols_score_centre_clip_or_every_clip():
    k = 31
    phi = torch.zeros(k, k)
    phi[15, 15] = 1.0  # the centre audio picks the centre video (a2v right)
    phi[0, 15] = 2.0  # the centre video picks audio 0 (v2a wrong: 15 steps off)
    s = scores(phi, 5)
    assert s["asva"] == (1.0, 0.0)
    # all: row 0 -> 15 (wrong), rows 1..5 -> 0 (within 5), row 15 -> 15, other rows -> 0 (wrong)
    assert s["all"][0] == pytest.approx(6 / 31)


def _write(d, name, video):
    (d / name).write_bytes(encode_mp4(video.frames, video.fps, video.audio, video.audio_rate))


def test_evaluate_folder_3s_segments_short_and_broken(tmp_path, tiny_model, capsys):
    d = tmp_path / "videos"
    d.mkdir()
    for s in range(2):
        _write(d, f"seg{s}.mp4", make_family_video(EVAL_SEED_BASE + 900 + s, "motion", duration=3.0, size=32)[0])
    _write(d, "long.mp4", make_family_video(EVAL_SEED_BASE + 910, "camera", duration=4.0, size=32)[0])
    _write(d, "short.mp4", make_family_video(1, "deform", duration=2.0, size=32)[0])
    (d / "broken.mp4").write_bytes(b"not a video")
    tiny_model.save_pretrained(tmp_path / "ckpt")
    rc = main(["--checkpoint", str(tmp_path / "ckpt" / "config.json"), "--videos", str(d), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["n"] == 3 and res["offsets_used"] == {"25": 2, "31": 1}
    skipped = dict(res["skipped"])
    assert set(skipped) == {str(d / "short.mp4"), str(d / "broken.mp4")}
    assert "too short" in skipped[str(d / "short.mp4")] and "unreadable" in skipped[str(d / "broken.mp4")]
    # chance averaged over the K used: (2 * 11/25 + 11/31) / 3
    assert res["asva"]["chance"] == pytest.approx((2 * 11 / 25 + 11 / 31) / 3)
    assert "protocol asva (default)" in out and "protocol all" in out and "chance" in out
    assert out.strip().splitlines()[-1] == f"saved result to {tmp_path / 'r.json'}"


def test_evaluate_synthetic_per_family(tmp_path, tiny_model, capsys):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    rc = main(["--checkpoint", str(tmp_path / "ckpt"), "--synthetic", "1", "--families", "motion,flash", "protocol=all",
               "--json", str(tmp_path / "r.json")])
    assert rc == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert set(res["families"]) == {"motion", "flash"} and res["n"] == 2 and res["protocol"] == "all"
    assert res["acc_a2v"] == res["all"]["acc_a2v"]


@pytest.mark.parametrize("argv, message", [
    (["--synthetic", "1"], "--checkpoint is required"),
    (["--checkpoint", "/nonexistent/ckpt", "--synthetic", "1"], "does not exist"),
    (["--checkpoint", "CKPT", "--shards", "/nonexistent/*.tar"], "no shards match '/nonexistent/*.tar'"),
    (["--checkpoint", "CKPT"], "give exactly one source"),
    (["--checkpoint", "CKPT", "--synthetic", "1", "num_offsets=30"], "must be odd"),
    (["--checkpoint", "CKPT", "--synthetic", "1", "tolerence=3"], "did you mean 'tolerance'"),
])
def test_evaluate_user_mistakes(tmp_path, tiny_model, capsys, argv, message):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    argv = [str(tmp_path / "ckpt") if a == "CKPT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_shipped_checkpoint_beats_chance_on_held_out_families(small_checkpoint):
    from sync_classifier.model import SyncClassifier

    model = SyncClassifier.from_pretrained(small_checkpoint)
    vids = [(f"{f}{s}", make_family_video(EVAL_SEED_BASE + 500 + s, f, duration=4.0, size=32)[0])
            for f in ("motion", "appearance") for s in range(4)]
    res = evaluate_model(model, vids, protocol="all")
    assert res["n"] == 8 and res["all"]["acc_a2v"] > 0.5 and res["all"]["acc_v2a"] > 0.5
