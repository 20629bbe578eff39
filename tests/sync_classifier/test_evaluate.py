import json

from curate.media import encode_mp4
from sync_classifier import make_sounding_video, write_synthetic_folder
from sync_classifier.data import EVAL_SEED_BASE
from sync_classifier.evaluate import main


def test_evaluate_videos_folder_skips_short_and_broken(tmp_path, small_checkpoint, capsys):
    d = tmp_path / "videos"
    write_synthetic_folder(d, 3, seed=EVAL_SEED_BASE + 900, duration=4.0, size=48)
    short, _ = make_sounding_video(1, duration=2.5, size=32)
    (d / "short.mp4").write_bytes(encode_mp4(short.frames, short.fps, short.audio, short.audio_rate))
    (d / "broken.mp4").write_bytes(b"not a video")
    res = main(["--checkpoint", str(small_checkpoint), "--videos", str(d), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert res["n"] == 3
    skipped = dict(res["skipped"])
    assert set(skipped) == {str(d / "short.mp4"), str(d / "broken.mp4")}
    assert "too short" in skipped[str(d / "short.mp4")] and "unreadable" in skipped[str(d / "broken.mp4")]
    assert "a2v accuracy" in out and "v2a accuracy" in out
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 3
    # well above chance (~33 %) on held-out synthetic videos decoded from mp4
    assert res["acc_a2v"] > 0.6 and res["acc_v2a"] > 0.6


def test_evaluate_synthetic(small_checkpoint):
    res = main(["--checkpoint", str(small_checkpoint), "--synthetic", "3"])
    assert res["n"] == 3 and 0 <= res["acc_a2v"] <= 1 and 0 <= res["acc_v2a"] <= 1
