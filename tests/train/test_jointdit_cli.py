"""JointDiT entry points on user mistakes: one `error:` line, exit code 2, nothing built or written."""

from __future__ import annotations

import pytest

from train.jointdit import cli as train_cli
from train.sample_jointdit import cli as sample_cli


def last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_shards_matching_nothing_names_the_pattern_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(["--shards", str(tmp_path / "none-*.tar"), "--out-dir", str(out)]) == 2
    assert last_error(capsys) == f"error: no shards match '{tmp_path / 'none-*.tar'}'"
    assert not out.exists()


def test_missing_data_bad_value_and_unknown_setting(tmp_path, capsys):
    assert train_cli(["--out-dir", str(tmp_path / "r")]) == 2
    assert "give --shards" in last_error(capsys)
    assert train_cli(["--shards", "x.tar", "lr=abc"]) == 2
    assert last_error(capsys) == "error: lr='abc': expected a number or null"
    assert train_cli(["--shards", "x.tar", "joint=3"]) == 2
    assert "expected a mapping" in last_error(capsys)
    assert train_cli(["--shards", "x.tar", "lamda_video=2"]) == 2
    assert "did you mean 'lambda_video'" in last_error(capsys)


def test_every_training_option_has_help(capsys):
    with pytest.raises(SystemExit):
        train_cli(["--help"])
    text = capsys.readouterr().out
    assert "setting `" not in text  # no option left with only its name as help
    assert "--lambda-audio" in text and "Weight of the audio loss" in text


def test_sampler_missing_checkpoint_or_image(tmp_path, capsys):
    assert sample_cli(["--checkpoint", str(tmp_path / "nope"), "--image", "x.png", "--out", str(tmp_path / "a.mp4")]) == 2
    assert last_error(capsys) == f"error: --checkpoint '{tmp_path / 'nope'}' does not exist"
    (tmp_path / "ck").mkdir()
    assert sample_cli(["--checkpoint", str(tmp_path / "ck"), "--image", str(tmp_path / "x.png"), "--out", str(tmp_path / "a.mp4")]) == 2
    assert last_error(capsys) == f"error: --image '{tmp_path / 'x.png'}' does not exist"
