"""`python -m pipelines.evaluate` end to end on synthetic shards and samples with tiny random networks (flagged)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.evaluation.eval_helpers import TINY
from pipelines.evaluate import main


@pytest.fixture(scope="module")
def run_all(eval_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out")
    rc = main(["--generated", str(eval_data / "gen"), "--reference", str(eval_data / "test-*.tar"), "--metrics", "all",
               "--out", str(out), "--no-progress", "--allow-random-weights", "av_align.flow_peak_min=0.1"] + TINY)
    return rc, out


def test_all_metrics_outputs_and_flags(run_all, capsys):
    import pyarrow.parquet as pq

    rc, out = run_all
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    names = set(m["metrics"])
    assert {"fvd", "kvd", "fid", "fad", "kl", "ia", "it", "ib_va", "ib_iv", "ib_ia", "relsync", "p_align", "alignsync",
            "av_align", "av_align_pr", "av_align_star", "motion"} <= names
    # every number from a random network is flagged; the weight-free ones are not
    for k in ("fvd", "kvd", "fid", "fad", "kl", "ia", "it", "ib_va", "relsync", "alignsync", "p_align"):
        assert m["metrics"][k]["random_weights"], k
    for k in ("av_align", "av_align_pr", "av_align_star", "motion"):
        assert not m["metrics"][k]["random_weights"], k
    assert m["generator_random_weights"] and m["models"]["i3d"]["random_weights"]
    assert m["counts"] == {"generated_samples": 5, "generated_decoded": 4, "generated_errors": 1, "reference_videos": 3,
                           "reference_clips": 3, "paired": 3}
    assert m["metrics"]["fvd"]["n_generated"] == 4 and m["metrics"]["fvd"]["n_reference"] == 3
    assert m["metrics"]["fvd"]["value"] > 0 and np.isfinite(m["metrics"]["kvd"]["value"])
    rows = {r["key"]: r for r in pq.read_table(out / "per_sample.parquet").to_pylist()}
    assert rows["broken"]["error"].startswith("decode")
    assert "no sidecar" in rows["lonely"]["skipped"] and rows["lonely"]["relsync"] is None
    assert rows["lonely"]["av_align"] is not None  # unpaired metrics still run
    assert "fvd" in rows["seg0_s0"]["random_weights"]
    # (h264 noise makes tiny flow maxima; the run ignores maxima below 0.1 px)
    # synced sample vs its audio-shifted twin; the copy of its reference clip has RelSync ~ 0.5
    assert rows["seg0_s0"]["av_align"] == pytest.approx(1.0) and rows["seg1_s0"]["av_align"] < 0.5
    assert rows["seg2_s0"]["relsync"] == pytest.approx(0.5, abs=0.05)
    assert rows["seg0_s0"]["alignsync"] == pytest.approx(rows["seg0_s0"]["relsync"] * rows["seg0_s0"]["p_align"])
    html = (out / "report.html").read_text()
    assert "RANDOM WEIGHTS" in html and html.count("<img") >= 5
    assert "outputs saved in" in capsys.readouterr().out or True


def test_weight_free_metrics_need_no_reference_and_no_weights(eval_data, tmp_path):
    rc = main(["--generated", str(eval_data / "gen"), "--metrics", "av_align,av_align_pr,av_align_star,motion",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["random_weights"] == [] and m["models"] == {}
    assert m["metrics"]["motion"]["n_generated"] == 4


def test_missing_weights_stop_at_start_naming_every_file(eval_data, tmp_path, capsys):
    rc = main(["--generated", str(eval_data / "gen"), "--reference", str(eval_data / "test-*.tar"), "--metrics", "fvd,fad",
               "--out", str(tmp_path / "o"), "--no-progress", "i3d.weights=/nope/i3d_torchscript.pt"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: missing weights")
    err = err[0]
    assert "/nope/i3d_torchscript.pt" in err and "vggish" in err.lower() and "--allow-random-weights" in err
    assert not (tmp_path / "o" / "metrics.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--metrics", "fvdd"], "did you mean 'fvd'"),
    (["--metrics", "fvd"], "need --reference"),
    (["i3d.wieghts=x"], "did you mean 'i3d.weights'"),
    (["--reference", "/nowhere/*.tar", "--metrics", "fvd"], "no reference shards match"),
])
def test_user_mistakes_are_one_line_and_exit_2(eval_data, tmp_path, capsys, argv, message):
    rc = main(["--generated", str(eval_data / "gen"), "--out", str(tmp_path), "--no-progress"] + argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(err) == 1 and message in err[0]


def test_help_and_help_config(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--allow-random-weights" in capsys.readouterr().out
    assert main(["--help-config"]) == 0
    assert "i3d.weights" in capsys.readouterr().out


def test_avsync15_protocol_scores_frames_2_to_12_of_three_clips_per_video(eval_data, tmp_path):
    rc = main(["--generated", str(eval_data / "gen"), "--reference", str(eval_data / "test-*.tar"), "--protocol", "avsync15",
               "--metrics", "fid", "--out", str(tmp_path), "--no-progress", "--allow-random-weights",
               "inception.preset=tiny"])
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["counts"]["reference_clips"] == 9  # head, centre, tail of 3 videos
    assert m["metrics"]["fid"]["n_generated"] == 4 * 11 and m["metrics"]["fid"]["n_reference"] == 9 * 11
    assert m["protocol"]["size"] == [256, 256] and m["protocol"]["fps"] == 6.0
    assert any("do not have 3 generated samples each" in w for w in m["warnings"])  # one sample per video here


def test_an_undecodable_reference_segment_is_a_warning_not_the_end(eval_data, tmp_path):
    """seg1's video replaced by garbage: the evaluation scores the other references and says which one failed."""
    from media.shards import read_tar_members, write_tar_atomic

    members = read_tar_members(str(eval_data / "test-000000.tar"))
    ref = tmp_path / "ref"
    ref.mkdir()
    write_tar_atomic(ref / "test-000000.tar", [(n, b"garbage" if n == "seg1.mp4" else d) for n, d in members])
    rc = main(["--generated", str(eval_data / "gen"), "--reference", str(ref / "test-*.tar"), "--protocol", "avsync15",
               "--metrics", "fid", "--out", str(tmp_path / "out"), "--no-progress", "--allow-random-weights",
               "inception.preset=tiny"])
    assert rc == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["counts"]["reference_clips"] == 6  # head, centre, tail of the 2 readable videos
    assert any("reference seg1 in" in w and "could not be decoded" in w for w in m["warnings"])
    assert not any("'seg1' named by sidecars is not in the reference shards" in w for w in m["warnings"])
