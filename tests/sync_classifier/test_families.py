import numpy as np
import pytest

from sync_classifier.families import ALL_FAMILIES, FAMILIES, RealMedia, make_family_video
from sync_classifier.synthetic import drum_samples


def test_families_are_deterministic_and_differ():
    for fam in FAMILIES:
        a, ea = make_family_video(5, fam, duration=3.0, size=24)
        b, eb = make_family_video(5, fam, duration=3.0, size=24)
        c, _ = make_family_video(6, fam, duration=3.0, size=24)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio) and np.array_equal(ea, eb)
        assert not np.array_equal(a.frames, c.frames)
        assert a.frames.shape == (72, 24, 24, 3) and a.audio.shape == (48000,) and a.source["family"] == fam
    with pytest.raises(ValueError, match="unknown family"):
        make_family_video(0, "nope")
    assert "flash" in ALL_FAMILIES and "flash" not in FAMILIES


def _change_at(frames, fps, times, lag=(0, 2)):
    """Mean absolute frame difference in the frames right after the times vs. elsewhere."""
    d = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # d[i]: frame i -> i+1
    near = np.zeros(len(d), bool)
    for t in times:
        i = int(np.floor(t * fps))
        near[max(0, i + lag[0]) : i + lag[1] + 1] = True
    return d[near].mean(), d[~near].mean()


@pytest.mark.parametrize("family", ["motion", "deform", "appearance", "camera"])
def test_visual_change_happens_at_the_audio_events(family):
    near, far = [], []
    for s in range(4):
        v, ev = make_family_video(200 + s, family, duration=6.0, size=32, fps=24.0)
        n, f = _change_at(v.frames, v.fps, ev)
        near.append(n), far.append(f)
        # and the audio has an onset at every event: energy right after > energy right before
        a = v.audio
        for t in ev[(ev > 0.1) & (ev < 5.8)]:
            i = int(t * v.audio_rate)
            assert np.abs(a[i : i + 400]).mean() > np.abs(a[i - 1200 : i - 400]).mean()
    assert np.mean(near) > 1.5 * np.mean(far), (family, near, far)


def test_no_shared_brightness_flash_at_events():
    """The first generator brightened every event object; here the mean brightness right after an event
    is not systematically higher than right before it in the object families."""
    ups = []
    for fam in ("motion", "contact", "deform", "camera"):
        for s in range(4):
            v, ev = make_family_video(300 + s, fam, duration=6.0, size=32, fps=24.0)
            lum = v.frames.astype(np.float32).mean(axis=(1, 2, 3))
            for t in ev[(ev > 0.2) & (ev < 5.7)]:
                i = int(np.floor(t * v.fps))
                ups.append(lum[i + 1] - lum[i - 2])
    assert abs(np.mean(ups)) < 2.0, np.mean(ups)


def test_real_media_backgrounds_and_sounds_are_used():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (40, 48, 64, 3), dtype=np.uint8)
    speech = np.sin(np.linspace(0, 400, 16000)).astype(np.float32)
    media = RealMedia(frames=frames, fps=12.0, audio=rng.standard_normal(80000).astype(np.float32), speech=speech,
                      drums=drum_samples(16000))
    got_bg = False
    for s in range(12):
        v, _ = make_family_video(s, "motion", duration=2.0, size=24, media=media)
        got_bg |= v.source["real_background"]
    assert got_bg


def test_silent_objects_events_are_recorded_and_visible():
    """multi always has 1-2 silent objects: their event times are in source["silent_events"], they are not
    sounding events, and the picture changes at them."""
    near, far = [], []
    for s in range(4):
        v, ev = make_family_video(400 + s, "multi", duration=6.0, size=32, fps=24.0)
        silent = np.asarray(v.source["silent_events"])
        assert len(silent) >= 2 and np.all(np.diff(silent) >= 0) and 0 <= silent[0] and silent[-1] < 6.0
        assert not np.isin(silent, ev).any()
        apart = silent[np.abs(silent[:, None] - ev[None, :]).min(axis=1) > 0.2]  # away from sounding events
        d = np.abs(np.diff(v.frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # d[i]: frame i -> i+1
        at = lambda times: np.isin(np.arange(len(d)), [int(t * v.fps) + k for t in times for k in range(3)])
        near.append(d[at(apart)].mean()), far.append(d[~at(np.concatenate([silent, ev]))].mean())
    assert np.mean(near) > 1.2 * np.mean(far), (near, far)  # measured 1.38 (contact / drifters move between events)
    assert make_family_video(1, "flash", duration=3.0, size=24)[0].source.get("silent_events", []) == []
