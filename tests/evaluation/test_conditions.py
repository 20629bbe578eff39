"""pipelines.conditions: the samplers' inputs cut from test shards under a protocol, and the records the samplers
copy into their sidecars."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_conditions_follow_the_protocol_and_match_the_reference_clip(eval_data, tmp_path, capsys):
    from evaluation.protocols import cut
    from evaluation.samples import iter_reference_segments, load_image
    from pipelines.conditions import main

    out = tmp_path / "cond"
    assert main(["--reference", str(eval_data / "test-*.tar"), "--protocol", "avsync15", "--out", str(out), "--no-progress"]) == 0
    assert "saved to" in capsys.readouterr().out
    recs = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    assert sorted(recs) == [f"seg{i}-{j}" for i in range(3) for j in range(3)]  # head / centre / tail
    # 3.0 s segments, 2 s clips: starts 0, 0.5, 1.0
    assert [recs[f"seg0-{j}"]["clip_start"] for j in range(3)] == pytest.approx([0.0, 0.5, 1.0])
    rec = recs["seg1-1"]
    assert rec["reference"] == "seg1" and rec["label"] == "hitting drum" and rec["samples"] == 3
    image = load_image(out / rec["image"])
    assert image.shape == (256, 256, 3)
    # the png is the first frame of the protocol's clip of that segment (lossless png, so within rounding)
    key, video, _ = [s for s in iter_reference_segments([str(eval_data / "test-000000.tar")]) if s[0] == "seg1"][0]
    frames, audio, _ = cut(video, 0.5, 6.0, 12, (256, 256))
    assert np.abs(image.astype(int) - frames[0].astype(int)).max() <= 1
    import soundfile as sf

    wav, rate = sf.read(out / rec["audio"], dtype="float32")
    assert rate == 16000 and abs(len(wav) - len(audio)) <= 1
    assert np.abs(wav[: len(audio)] - audio[: len(wav)]).max() < 2e-4  # 16-bit PCM


def test_jointdit_protocol_random_clip_is_seeded_like_the_evaluation(eval_data, tmp_path):
    from evaluation.conditions import ConditionConfig, write_conditions
    from evaluation.protocols import PROTOCOLS, clip_starts

    a = write_conditions(ConditionConfig(reference=str(eval_data / "test-*.tar"), out=str(tmp_path / "a"), seed=3), progress=False)
    b = write_conditions(ConditionConfig(reference=str(eval_data / "test-*.tar"), out=str(tmp_path / "b"), seed=4), progress=False)
    assert len(a) == 3 and all(r["samples"] == 5 for r in a)  # jointdit protocol on AVSync15: 5 per image
    rng = np.random.default_rng(3)
    expected = [clip_starts(3.0, PROTOCOLS["jointdit"], rng)[0] for _ in range(3)]
    assert [r["clip_start"] for r in a] == pytest.approx(expected, abs=1e-3)
    assert [r["clip_start"] for r in a] != [r["clip_start"] for r in b]


def test_conditions_user_errors(tmp_path, capsys):
    from evaluation.conditions import read_condition
    from pipelines.conditions import main

    assert main(["--reference", str(tmp_path / "none-*.tar"), "--out", str(tmp_path / "c")]) == 2
    assert "error: no" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"label": "x"}))
    from common.cli import UsageError

    with pytest.raises(UsageError, match="not a condition record"):
        read_condition(bad)
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--protocol" in capsys.readouterr().out


def test_an_undecodable_reference_segment_is_recorded_and_the_rest_go_on(eval_data, tmp_path, capsys):
    """A corrupt segment inside a good shard and a truncated shard: both on record in failed_segments.jsonl, every other
    segment still gets its conditions; the evaluation's reader reports the same failures."""
    import json as _json

    from media.shards import read_tar_members, write_tar_atomic
    from evaluation.samples import iter_reference_segments
    from pipelines.conditions import main

    members = read_tar_members(str(eval_data / "test-000000.tar"))
    bad = [(n.replace("seg1.", "segbad."), b"garbage" if n.endswith(".mp4") else d) for n, d in members if n.startswith("seg1.")]
    mixed = tmp_path / "ref-000000.tar"
    write_tar_atomic(mixed, [m for m in members if m[0].startswith("seg0.")] + bad + [m for m in members if m[0].startswith("seg2.")])
    whole = (eval_data / "test-000000.tar").read_bytes()
    (tmp_path / "ref-000001.tar").write_bytes(whole[: len(whole) // 2 + 100])  # cut inside a member
    out = tmp_path / "cond"
    assert main(["--reference", str(tmp_path / "ref-*.tar"), "--protocol", "avsync15", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    failed = [_json.loads(line) for line in (out / "failed_segments.jsonl").read_text().splitlines()]
    assert {f["key"] for f in failed if f["shard"].endswith("ref-000000.tar")} == {"segbad"}
    assert any(f["shard"].endswith("ref-000001.tar") for f in failed)
    assert all(f["error"] for f in failed) and f"{len(failed)} failed to decode" in printed
    made = {p.stem.rsplit("-", 1)[0] for p in out.glob("*.png")}
    assert {"seg0", "seg2"} <= made and "segbad" not in made
    seen = []
    keys = [k for k, _, _ in iter_reference_segments(sorted(str(p) for p in tmp_path.glob("ref-*.tar")), failed=seen)]
    assert keys[:2] == ["seg0", "seg2"] and seen == failed
