import numpy as np
import torch

from sync_classifier.audio import log_mel
from sync_classifier.config import ClipSpec
from sync_classifier.data import InstanceStream, clip_audio, clip_frames, clip_offsets, fit_frames, make_instance, required_duration


def test_offsets_and_required_source():
    o = clip_offsets(21, 0.2)
    assert np.allclose(o[[0, 10, 20]], [-2.0, 0.0, 2.0]) and np.allclose(np.diff(o), 0.2)
    e = clip_offsets(31, 0.04)
    assert np.allclose(e[[0, 15, 30]], [-0.6, 0.0, 0.6])
    spec = ClipSpec()
    assert np.isclose(required_duration(21, 0.2, spec), 6.0) and np.isclose(required_duration(31, 0.04, spec), 3.2)


def test_clips_are_cut_at_the_offsets(ramp_video):
    spec = ClipSpec(image_size=16, n_mels=32)
    v = ramp_video(fps=24.0)
    offsets = clip_offsets(21, 0.2)
    center = 4.0
    starts = center + offsets - 1.0
    audio = clip_audio(v, starts, spec)
    assert audio.shape == (21, 32000)
    assert np.allclose(audio[:, 0], starts, atol=1 / 16000)  # the ramp's value is its time
    frames = clip_frames(v, starts, spec)
    assert frames.shape == (21, 12, 16, 16, 3)
    # frame i of clip k shows time start_k + i / 6 s -> grid frame floor((start_k + i/6) * 24)
    want = np.floor((starts[:, None] + np.arange(12)[None] / 6.0) * 24 + 1e-6).astype(int) % 256
    assert np.array_equal(frames[..., 0, 0, 0], want)
    inst = make_instance(v, center, offsets, spec)
    assert inst["mel"].shape == (21, 1, 32, 204) and inst["frames"].shape == (21, 12, 16, 16, 3)
    assert torch.allclose(inst["mel"][3], log_mel(torch.from_numpy(audio[3]), spec))


def test_windows_outside_the_video_are_padded_and_clamped(ramp_video):
    spec = ClipSpec(image_size=16, n_mels=32)
    v = ramp_video(duration=3.0)
    audio = clip_audio(v, np.array([-0.5, 2.0]), spec)
    assert np.all(audio[0, :8000] == 0) and audio[0, 8000] == 0.0 and audio[0, 8001] > 0
    assert np.all(audio[1, 16000:] == 0)
    frames = clip_frames(v, np.array([-0.5, 2.5]), spec)
    assert frames[0, 0, 0, 0, 0] == 0 and frames[1, -1, 0, 0, 0] == v.num_frames - 1


def test_fit_frames_center_crops_any_aspect():
    x = np.zeros((2, 40, 80, 3), np.uint8)
    x[:, :, 20:60] = 200  # central square bright
    y = fit_frames(x, 20)
    assert y.shape == (2, 20, 20, 3)
    assert y[:, :, 2:-2].min() >= 190


def test_synthetic_stream_yields_distinct_instances():
    spec = ClipSpec(image_size=24, n_mels=32)
    it = iter(InstanceStream(spec, clip_offsets(21, 0.2), seed=3))
    a, b = next(it), next(it)
    assert a["mel"].shape == (21, 1, 32, 204) and a["frames"].shape == (21, 12, 24, 24, 3)
    assert a["frames"].dtype == torch.uint8
    assert not torch.equal(a["frames"], b["frames"])
    # clips of one instance differ (shifted), neighbouring ones overlap in content
    assert not torch.equal(a["mel"][0], a["mel"][1])
