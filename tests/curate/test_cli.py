"""The curation entry points on user mistakes: one `error:` line and exit code 2 before any work, or exit code 1
with the reason when a run produced no data; never a traceback, never a mistake recorded as a video's failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import synthetic as syn
from pipelines.curate import main as curate
from pipelines.refilter import main as refilter

LOCAL = ["--local", "--no-progress"]


@pytest.fixture(scope="module")
def one_video(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("one")
    syn.write_video(root / "dog barking" / "abcdefghijk_000010.mp4", syn.bouncing_video(4.0, seed=11)[0])
    return root


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no message on stderr"
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("override, message", [
    ("pixel_diff.max=abc", "error: pixel_diff.max='abc': expected a number"),
    ("pixel_dif.max=0.1", "error: unknown setting or stage 'pixel_dif' (did you mean 'pixel_diff'?)"),
    ("pixel_diff.mx=0.1", "error: unknown parameter 'pixel_diff.mx' of stage 'pixel_diff' (did you mean 'pixel_diff.max'?)"),
    ("decode.short_sid=3", "error: unknown setting 'decode.short_sid' (did you mean 'decode.short_side'?)"),
    ("stages=pixel_diff,amplitud", "error: unknown stage 'amplitud' (did you mean 'amplitude'?)"),
    ("runner.kind=cluster", "error: runner.kind='cluster': expected 'ray' or 'local'"),
])
def test_bad_settings_stop_before_any_work(one_video, tmp_path, capsys, override, message):
    out = tmp_path / "out"
    assert curate(["--src", str(one_video), "--out", str(out), *LOCAL, override]) == 2
    assert error_line(capsys).startswith(message)
    assert not out.exists()  # nothing recorded, so the corrected rerun is not refused


def test_corrected_rerun_after_a_bad_value_runs(one_video, tmp_path, capsys):
    out = tmp_path / "out"
    assert curate(["--src", str(one_video), "--out", str(out), *LOCAL, "pixel_diff.max=abc"]) == 2
    assert curate(["--src", str(one_video), "--out", str(out), *LOCAL, "--min-segments-per-class", "0",
                   "pixel_diff.max=0.5"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["videos"] == {**stats["videos"], "total": 1, "ok": 1, "failed": 0}
    assert stats["segments"]["kept"] >= 1


def test_out_that_is_a_file(one_video, tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert curate(["--src", str(one_video), "--out", str(f), *LOCAL]) == 2
    assert error_line(capsys) == f"error: --out '{f}' is a file, not a folder"


def test_missing_src_empty_folder_and_missing_class_list(tmp_path, one_video, capsys):
    assert curate(["--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), *LOCAL]) == 2
    assert "does not exist" in error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert curate(["--src", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *LOCAL]) == 2
    assert error_line(capsys).startswith(f"error: no video files under --src '{tmp_path / 'empty'}'")
    assert curate(["--src", str(one_video), "--out", str(tmp_path / "o"), "--classes", str(tmp_path / "none.txt"), *LOCAL]) == 2
    assert "none.txt" in error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_csv_that_is_not_vggsound_format(one_video, tmp_path, capsys):
    bad = tmp_path / "labels.csv"
    bad.write_text("file,label\na.mp4,dog\n")
    assert curate(["--src", str(one_video), "--out", str(tmp_path / "o"), "--csv", str(bad), *LOCAL]) == 2
    assert "has no VGGSound rows" in error_line(capsys)
    other = tmp_path / "other.csv"
    other.write_text("zzzzzzzzzzz,0,cat purring,train\n")  # valid, but names none of the videos
    assert curate(["--src", str(one_video), "--out", str(tmp_path / "o"), "--csv", str(other), *LOCAL]) == 2
    assert "1 not in CSV" in error_line(capsys)


def test_src_that_is_not_a_video_exits_nonzero_with_the_reason(tmp_path, capsys):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 20)
    out = tmp_path / "o"
    assert curate(["--src", str(notes), "--out", str(out), *LOCAL]) == 1
    assert error_line(capsys).startswith("error: the run produced no data: no input could be used: 1 failed")
    assert (out / "inputs.parquet").is_file()  # the failure is on record


def test_class_balance_dropping_every_class_is_loud(one_video, tmp_path, capsys):
    out = tmp_path / "o"
    assert curate(["--src", str(one_video), "--out", str(out), *LOCAL, "pixel_diff.max=0.5",
                   "--min-segments-per-class", "1000"]) == 1
    assert "class balance dropped every class" in error_line(capsys)


def test_dry_run_shows_class_balance(one_video, tmp_path, capsys):
    assert curate(["--src", str(one_video), "--out", str(tmp_path / "o"), *LOCAL, "--dry-run",
                   "--min-segments-per-class", "7"]) == 0
    text = capsys.readouterr().out
    assert "classes with fewer than 7 merged segments are dropped" in text
    assert not (tmp_path / "o").exists()


def test_help_config_lists_every_setting(capsys):
    assert curate(["--help-config"]) == 0
    text = capsys.readouterr().out
    assert "decode.short_side" in text and "balance.min_segments_per_class" in text


def test_refilter_mistakes(one_video, tmp_path, capsys):
    assert refilter(["--out", str(tmp_path / "nothing")]) == 2
    assert "is --out a finished curation run?" in error_line(capsys)
    out = tmp_path / "o"
    assert curate(["--src", str(one_video), "--out", str(out), *LOCAL, "--min-segments-per-class", "0",
                   "pixel_diff.max=0.5"]) == 0
    capsys.readouterr()
    assert refilter(["--out", str(out), "pixel_diff.max=abc"]) == 2
    assert error_line(capsys) == "error: pixel_diff.max='abc': expected a number"
    assert refilter(["--out", str(out), "windows.stride=1.0"]) == 2
    assert "changes how windows are scored" in error_line(capsys)
    assert refilter(["--out", str(out), "pixel_diff.max=0.00001"]) == 1
    assert "every one of the" in error_line(capsys)


def test_refilter_help_config_needs_no_run_folder(capsys):
    assert refilter(["--help-config"]) == 0
    assert "decode.short_side" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        refilter([])
    assert e.value.code == 2 and "required: --out" in capsys.readouterr().err


def test_make_sample_help_writes_nothing(monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sample", Path(__file__).parents[2] / "sample" / "make_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "write_synthetic", lambda out: pytest.fail("--help must not regenerate the sample"))
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
