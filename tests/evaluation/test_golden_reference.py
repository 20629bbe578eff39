"""Golden checks: the project reproduces the authors' code (outputs stored by tests/fixtures/eval_reference/
make_fixtures.py from TempoTokens' av_align.py, ASVA's FID code and SpecVQGAN's Melception)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.evaluation.golden_inputs import AV_CLIPS, FPS, RATE, av_clip, fid_frames, mel_audio, melception_input, seeded_state_dict

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "eval_reference"


def _load(name):
    return json.loads((FIX / f"{name}.json").read_text())


def _close_summary(got: np.ndarray, ref: dict, rtol: float, atol: float, keep: int | None = None):
    got = np.asarray(got, np.float64)
    assert list(got.shape) == ref["shape"]
    if ref.get("values") is not None:
        vals = got.reshape(got.shape[0], -1)[:, :keep] if keep else got
        np.testing.assert_allclose(vals, np.array(ref["values"]), rtol=rtol, atol=atol)
    assert got.sum() == pytest.approx(ref["sum"], rel=rtol, abs=atol * got.size)
    assert np.abs(got).sum() == pytest.approx(ref["abs_sum"], rel=rtol, abs=atol * got.size)


@pytest.mark.parametrize("clip", AV_CLIPS)
def test_av_align_reproduces_both_reference_versions(clip):
    from evaluation.av_align import AVAlignConfig, av_align_scores, detect_events
    from evaluation.motion import flow_magnitudes

    ref = _load("av_align")[clip]
    frames, audio = av_clip(clip)
    mags = flow_magnitudes(frames)
    np.testing.assert_allclose(np.concatenate([mags[:1], mags]), ref["flow_trajectory"], rtol=1e-4, atol=1e-5)
    for version in ("current", "2023"):
        cfg = AVAlignConfig(version=version)
        ev = detect_events(audio, RATE, mags, FPS, cfg)
        np.testing.assert_allclose(ev.audio_onsets, ref[version]["audio_onsets"], atol=1e-6)
        np.testing.assert_allclose(ev.video_peaks, ref[version]["video_peaks"], atol=1e-9)
        got = av_align_scores(audio, RATE, mags, FPS, cfg)["av_align"]
        assert got == pytest.approx(ref[version]["score"], abs=1e-9), (clip, version)
        if version == "current":
            assert got <= 1.0


def test_av_align_versions_differ_where_the_rules_do():
    ref = _load("av_align")
    assert ref["two_onsets_one_peak"]["2023"]["score"] > ref["two_onsets_one_peak"]["current"]["score"]
    assert len(ref["small_motion"]["2023"]["video_peaks"]) > len(ref["small_motion"]["current"]["video_peaks"])


@pytest.mark.parametrize("name", ["square", "wide"])
def test_fid_input_229_bicubic_matches_asva(name):
    from evaluation.extractors import fid_input

    ref = _load("fid")[name]
    x = fid_input(fid_frames()[name], "229-bicubic").numpy()
    assert list(x.shape) == ref["shape"] == [2, 3, 229, 229]
    np.testing.assert_allclose(x[:, :, ::16, ::16], np.array(ref["sub"]), atol=1e-5)
    assert x.astype(np.float64).sum() == pytest.approx(ref["sum"], rel=1e-5)
    assert np.abs(x.astype(np.float64)).sum() == pytest.approx(ref["abs_sum"], rel=1e-5)


def test_fid_inception_features_match_asva_network_float64():
    """ASVA's Inception (no resize inside) with seeded weights, fed their 229 input: the project's FID extractor
    with the same weights and `input_mode=229-bicubic` gives the same 2048-d features."""
    from evaluation.extractors import InceptionExtractor

    ext = InceptionExtractor(preset="real", batch_size=2)
    ext.input_mode = "229-bicubic"
    net = InceptionExtractor._architecture()
    net.load_state_dict(seeded_state_dict(net.state_dict()))
    ext.net = net.double().eval()
    feats = ext(fid_frames()["square"][:2])
    _close_summary(feats, _load("fid")["inception_features"], rtol=1e-5, atol=1e-8, keep=256)


def test_melception_mel_matches_specvqgan():
    from evaluation.melception import melception_mel

    ref = _load("melception")["normed"]
    mel = melception_mel(mel_audio(), 22050)
    assert list(mel.shape) == ref["shape"]
    np.testing.assert_allclose(mel[:, ::6], np.array(ref["sub"]), atol=1e-4)
    assert float(mel.astype(np.float64).sum()) == pytest.approx(ref["sum"], rel=1e-5, abs=1e-3)


def test_melception_loads_specvqgan_layout_and_matches_their_network(tmp_path):
    from evaluation.melception import MelceptionNet, load_melception

    skel = MelceptionNet()
    state = seeded_state_dict(skel.state_dict())
    # their checkpoint layout: {'model': state dict} with torchvision's names, AuxLogits included
    assert any(k.startswith("AuxLogits.") for k in state)
    torch.save({"model": state}, tmp_path / "melception.pt")
    net = load_melception(tmp_path / "melception.pt").double()
    with torch.no_grad():
        feats, logits, unbiased = net(torch.from_numpy(melception_input()))
    ref = _load("melception")
    _close_summary(feats.numpy(), ref["features_2048"], rtol=1e-5, atol=1e-8, keep=256)
    _close_summary(logits.numpy(), ref["logits"], rtol=1e-5, atol=1e-8)
    _close_summary(unbiased.numpy(), ref["logits_unbiased"], rtol=1e-5, atol=1e-8)
    # a DataParallel prefix loads too; a checkpoint of another network is refused with the file named
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "dp.pt")
    assert load_melception(tmp_path / "dp.pt").fc.weight.shape == (309, 2048)
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        load_melception(tmp_path / "other.pt")
