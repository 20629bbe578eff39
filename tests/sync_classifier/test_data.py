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


def _folder(tmp_path, n, duration=6.6):
    from sync_classifier import write_synthetic_folder

    return write_synthetic_folder(tmp_path / "videos", n, seed=40, duration=duration, size=24)


def test_folder_stream_splits_over_ranks_and_streams_one_video_at_a_time(tmp_path, monkeypatch):
    import sync_classifier.data as data

    paths = _folder(tmp_path, 4)
    spec = ClipSpec(image_size=24, n_mels=32)
    decoded = []
    real = data.decode_usable

    def spy(p, *a, **k):
        decoded.append(str(p))
        return real(p, *a, **k)

    monkeypatch.setattr(data, "decode_usable", spy)
    seen = {}
    for rank in range(2):
        s = InstanceStream(spec, clip_offsets(21, 0.2), source="videos", path=str(tmp_path / "videos"), seed=1,
                           rank=rank, world_size=2, shuffle_buffer=1)
        it = iter(s)
        n0 = len(decoded)
        next(it)
        assert len(decoded) - n0 == 1  # the first instance needs one decode, not the whole folder
        for _ in range(1):
            next(it)
        seen[rank] = decoded[n0:]
    assert set(seen[0]).isdisjoint(seen[1]) and set(seen[0]) | set(seen[1]) == {str(p) for p in paths}


def test_folder_stream_resume_skips_without_decoding(tmp_path, monkeypatch):
    import sync_classifier.data as data

    _folder(tmp_path, 3)
    spec = ClipSpec(image_size=24, n_mels=32)
    decoded = []
    real = data.decode_usable
    monkeypatch.setattr(data, "decode_usable", lambda p, *a, **k: decoded.append(str(p)) or real(p, *a, **k))
    full = InstanceStream(spec, clip_offsets(21, 0.2), source="videos", path=str(tmp_path / "videos"), seed=2, shuffle_buffer=1)
    it = iter(full)
    for _ in range(3):
        next(it)
    order = decoded[:3]
    decoded.clear()
    resumed = iter(InstanceStream(spec, clip_offsets(21, 0.2), source="videos", path=str(tmp_path / "videos"), seed=2,
                                  shuffle_buffer=1, skip=2))
    next(resumed)
    assert decoded == [order[2]]  # the pass continues at its third video


def test_folder_stream_reports_no_usable_videos(tmp_path):
    import pytest

    _folder(tmp_path, 1, duration=3.0)  # too short for 21 offsets (6 s)
    spec = ClipSpec(image_size=24, n_mels=32)
    with pytest.raises(RuntimeError, match="no usable sounding videos"):
        next(iter(InstanceStream(spec, clip_offsets(21, 0.2), source="videos", path=str(tmp_path / "videos"))))
