"""Golden checks against the AVSync15 authors' code (lzhangbj/ASVA at 6587938): their loaders and their
sync classifier, run by tests/fixtures/asva_sync/make_fixtures.py on hand-made inputs, stored in
asva_sync_golden.npz. This project's `preprocess=asva` and its model must reproduce them."""

import importlib.util
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from sync_classifier.asva import asva_key_map, asva_spec, config_from_shapes
from sync_classifier.asva_preprocess import (CLIP_STD, asva_mel, clip_times, clips_from_decoded, frames_to_channels,
                                             relsync_from_decoded, sinc_resample)
from sync_classifier.model import SyncClassifier

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "asva_sync"
UINT8_LEVEL = 1 / 255 / min(CLIP_STD)
"""One uint8 level in CLIP-normalised units (0.015)."""
MEL_TOL = 1e-4


def _script():
    spec = importlib.util.spec_from_file_location("asva_make_fixtures", FIXTURES / "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gold():
    with np.load(FIXTURES / "asva_sync_golden.npz") as z:
        return dict(z)


@pytest.fixture(scope="module")
def script():
    return _script()


@pytest.fixture(scope="module")
def inputs(script, gold):
    inp = script.make_inputs()
    for k, v in inp.items():
        assert zlib.crc32(np.ascontiguousarray(v).tobytes()) == int(gold[f"in_{k}_crc32"]), f"input {k} differs from the fixture's"
    video = list(zip(inp["frame_pts"].tolist(), inp["frames"]))
    audio = [(p, d.numpy()) for p, d in script.audio_frames(inp)]
    return inp, video, audio


def _check_digest(gold, name, x, tol):
    x = x.detach().double().numpy()
    assert tuple(x.shape) == tuple(gold[f"{name}_shape"])
    np.testing.assert_allclose(x.reshape(-1)[gold[f"{name}_idx"]], gold[f"{name}_val"], atol=tol, rtol=0)
    np.testing.assert_allclose(x.reshape(x.shape[0], x.shape[1], -1).mean(-1), gold[f"{name}_mean"], atol=tol, rtol=0)


def test_sinc_resample_matches_torchaudio_resample(gold, inputs):
    inp = inputs[0]
    w = torch.from_numpy(inp["audio"][:8000].T.astype(np.float32) / 32768.0)
    out = sinc_resample(w, 44100, 16000)
    assert out.shape == gold["resample_out"].shape
    np.testing.assert_allclose(out.numpy(), gold["resample_out"], atol=2e-6, rtol=0)


def test_mel_of_stereo_44k_matches_their_waveform_to_melspectrogram(gold, inputs):
    inp = inputs[0]
    w = torch.from_numpy(inp["audio"].T.astype(np.float32) / 32768.0)
    _check_digest(gold, "mel_direct", asva_mel(w, 44100)[None], MEL_TOL)


def test_mel_of_a_pure_tone_matches_theirs_in_the_quiet_bins(gold, script):
    """High bins of a 150 Hz tone over 1e-5 noise sit near the log floor, where FFT rounding shows: the
    fbank must compute in Kaldi's order (float32 filters, hann_window, one 2-D product)."""
    _check_digest(gold, "mel_tone", asva_mel(script.quiet_tone(), 16000)[None], MEL_TOL)


def test_test_loader_clips_match_theirs(gold, inputs):
    """Two clips from their test loader: nearest frames (the frame exactly at the first time is skipped by
    their seek), 30 x 46 frames bicubic-resized with the long side truncated, stereo audio in codec frames
    reshaped as their `view(c, t)`, channel 0."""
    inp, video, audio = inputs
    spec = asva_spec()
    small = type(spec)(**{**spec.__dict__, "image_size": 24})
    v, m = clips_from_decoded(video, audio, int(inp["audio_rate"]), clip_times(gold["loader_starts"], small), small)
    ref = gold["loader_video"].astype(np.float32)
    assert tuple(v.shape) == ref.shape
    np.testing.assert_allclose(v.numpy(), ref, atol=UINT8_LEVEL, rtol=0)
    assert float((v - torch.from_numpy(ref)).abs().mean()) < 0.05 * UINT8_LEVEL
    _check_digest(gold, "loader_mel", m, MEL_TOL)


def test_evaluation_clip_matches_their_relsync_inputs(gold, inputs):
    """Their RelSync / AlignSync inputs: first frame at or after each time, square crop, bilinear 256,
    bicubic 224; audio codec frames in [s, s + 2]."""
    inp, video, audio = inputs
    v, m = relsync_from_decoded(video, audio, int(inp["audio_rate"]), float(gold["relsync_start"]), asva_spec())
    _check_digest(gold, "relsync_video", v[None], UINT8_LEVEL)
    _check_digest(gold, "relsync_mel", m[None], MEL_TOL)


def test_stereo_frames_are_reshaped_not_transposed():
    f = np.arange(8, dtype=np.float32).reshape(4, 2)  # 4 samples, L/R interleaved: L = 0, 2, 4, 6
    assert frames_to_channels([f])[0].tolist() == [0, 1, 2, 3]


def test_model_outputs_match_their_classes_with_seeded_weights(gold, script):
    from tests.sync_classifier.test_asva import their_shapes

    theirs = {}
    for part, shapes in their_shapes().items():
        zeros = {k: torch.zeros(s, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
                 for k, s in shapes.items()}
        theirs[part] = script.seeded_state(zeros, part + "/")
    assert sum(t.numel() for p in theirs.values() for t in p.values()) == int(gold["model_param_count"])
    model = SyncClassifier(config_from_shapes(theirs))
    model.load_state_dict({ours: theirs[part][k] for (part, k), ours in asva_key_map(theirs).items()}, strict=True)
    model = model.double().eval()
    mel, video = script.model_inputs()
    with torch.no_grad():
        a, v = model.encode_audio(mel), model.encode_video(video)
        logits = torch.stack([model.head(a, v[[i, i]]) for i in range(2)])
    np.testing.assert_allclose(a.numpy(), gold["model_audio_emb"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(v.numpy(), gold["model_video_emb"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(logits.numpy(), gold["model_logits"], atol=1e-5, rtol=0)
    assert np.ptp(gold["model_logits"]) > 1e-3  # the logits are not all alike
