import numpy as np

from media.decode import DecodeConfig, decode_video
from sync_classifier import make_sounding_video, write_synthetic_folder
from sync_classifier.synthetic import drum_samples


def test_deterministic_and_varied():
    a, ea = make_sounding_video(7, duration=3.0, size=32)
    b, eb = make_sounding_video(7, duration=3.0, size=32)
    c, ec = make_sounding_video(8, duration=3.0, size=32)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio) and np.array_equal(ea, eb)
    assert not np.array_equal(a.frames, c.frames)
    assert a.frames.shape == (72, 32, 32, 3) and a.audio.shape == (48000,) and a.fps == 24.0


def test_drums_are_shipped_in_the_repo():
    d = drum_samples(16000)
    assert len(d) == 10 and all(x.ndim == 1 and 0 < len(x) <= 8000 for x in d)


def test_event_gaps_are_random():
    gaps = np.concatenate([np.diff(make_sounding_video(s, duration=8.0, size=16)[1]) for s in range(6)])
    assert gaps.std() > 0.15  # not a fixed rhythm


def test_audio_and_visual_events_coincide():
    """Audio onsets and frame changes are concentrated at the event times."""
    near_a, far_a, near_v, far_v = [], [], [], []
    for s in range(8):
        v, ev = make_sounding_video(100 + s, duration=6.0, size=32, fps=24.0)
        rate = v.audio_rate
        env = np.sqrt(np.convolve(v.audio**2, np.ones(400) / 400, mode="same"))
        onset = np.maximum(np.diff(env[::160]), 0)  # 10 ms hops
        t_on = np.arange(len(onset)) * 0.01
        # fraction of pixels that change clearly (> 40 levels: above the pixel noise) between frames
        diff = (np.abs(np.diff(v.frames.astype(np.float32), axis=0)).max(axis=3) > 40).mean(axis=(1, 2))
        t_fr = (np.arange(len(diff)) + 1) / v.fps
        d_on = np.min(np.abs(t_on[:, None] - ev[None]), axis=1)
        d_fr = np.min(np.abs(t_fr[:, None] - ev[None]), axis=1)
        near_a.append(onset[d_on < 0.03].mean()); far_a.append(onset[d_on > 0.25].mean())
        near_v.append(diff[d_fr < 0.15].mean()); far_v.append(diff[d_fr > 0.35].mean() if np.any(d_fr > 0.35) else 0)
        assert rate == 16000
    assert np.mean(near_a) > 5 * np.mean(far_a)
    assert np.mean(near_v) > 3 * np.mean(far_v)


def test_write_synthetic_folder_writes_decodable_mp4(tmp_path):
    paths = write_synthetic_folder(tmp_path, 2, seed=5, duration=3.5, size=32)
    assert [p.name for p in paths] == ["synth_00000005.mp4", "synth_00000006.mp4"]
    v = decode_video(paths[0], DecodeConfig(short_side=0))
    assert abs(v.duration - 3.5) < 0.1 and v.audio is not None and v.frames.shape[1:] == (32, 32, 3)
    assert (tmp_path / "synth_00000005.json").exists()
