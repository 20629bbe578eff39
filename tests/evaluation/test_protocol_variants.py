"""Protocol variants per dataset (GreatestHits of both papers), the FAD network per protocol, frames 2..N under
jointdit, and what metrics.json records about each metric's rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from media.decode import DecodedVideo
from evaluation.protocols import clip_starts, cut, protocol_for
from evaluation.runner import EvalConfig
from pipelines.evaluate import main
from tests.evaluation.eval_helpers import event_clip


def test_avsync15_greatesthits_cuts_128_by_256():
    p = protocol_for("avsync15", "greatesthits")
    assert p.size == (128, 256) and protocol_for("avsync15", "avsync15").size == (256, 256)
    frames, _ = event_clip([5], fps=10.0, seconds=4.0, size=64)
    f, a, _ = cut(DecodedVideo(frames, 10.0, np.zeros(64000, np.float32), 16000), 0.0, p.fps, p.num_frames, p.size)
    assert f.shape == (12, 128, 256, 3) and a.shape == (32000,)


def test_jointdit_greatesthits_takes_one_clip_in_each_10s_segment():
    p = protocol_for("jointdit", "greatesthits")
    starts = clip_starts(25.0, p, np.random.default_rng(3))
    assert len(starts) == 3  # [0, 10), [10, 20), [20, 25)
    for k, s in enumerate(starts):
        assert 10 * k <= s and s + 2.0 <= min(10 * (k + 1), 25.0) + 1e-9
    assert len(clip_starts(21.0, p, np.random.default_rng(3))) == 2  # the 1 s tail is shorter than a clip
    assert starts == clip_starts(25.0, p, np.random.default_rng(3))
    assert len(clip_starts(10.0, protocol_for("jointdit", "avsync15"), np.random.default_rng(3))) == 1


def test_frames_2_to_n_and_feature_networks_per_protocol():
    assert protocol_for("jointdit").skip_first_frame and protocol_for("avsync15").skip_first_frame
    assert not protocol_for("none").skip_first_frame
    assert EvalConfig(protocol="jointdit").fad_net() == "melception"
    assert EvalConfig(protocol="avsync15").fad_net() == "vggish"
    assert EvalConfig(protocol="jointdit", fad_network="vggish").fad_net() == "vggish"
    assert protocol_for("avsync15").fid_input == "229-bicubic" and protocol_for("jointdit").fid_input == "299-bilinear"
    with pytest.raises(ValueError, match="dataset"):
        EvalConfig(dataset="vggss")
    from evaluation.av_align import AVAlignConfig

    with pytest.raises(ValueError, match="av_align.version"):
        AVAlignConfig(version="2024")


@pytest.mark.parametrize("version", ["current", "2023"])
def test_metrics_json_records_the_av_align_version_and_frames(eval_data, tmp_path, version):
    out = tmp_path / "out"
    rc = main(["--generated", str(eval_data / "gen"), "--metrics", "av_align,ia", "--protocol", "jointdit", "--out", str(out),
               "--no-progress", "--allow-random-weights", "imagebind.preset=tiny", f"av_align.version={version}"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["metrics"]["av_align"]["variant"]["version"] == version
    assert m["variants"]["av_align"]["peak_min_px"] == (0.1 if version == "current" else 0.0)
    assert m["metrics"]["ia"]["variant"] == {"frames": "2..N"}
    assert m["protocol"]["skip_first_frame"] and m["protocol"]["fad_network"] == "melception"
    import pyarrow.parquet as pq

    vals = [v for v in pq.read_table(out / "per_sample.parquet").column("av_align").to_pylist() if v is not None]
    assert vals and (max(vals) <= 1.0 or version == "2023")
