"""AV-Align / AV-Align* on real footage: the Big Buck Bunny trailer (real frames) dubbed with real drum hits at
its own motion peaks (evaluation.dubbing), scored with its audio unshifted and shifted by 0.5 / 1.0 s. The
undubbed trailer is not asserted: its music is not caused by what moves, and neither metric ranks it
(docs/evaluation.md has both tables)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media.decode import DecodeConfig, decode_video
from evaluation.av_align import av_align_scores
from evaluation.dubbing import dub_events, load_one_shots
from evaluation.motion import flow_magnitudes

REPO = Path(__file__).resolve().parents[2]
TRAILER = REPO.parent / "shared" / "media" / "bbb_trailer.mp4"


@pytest.fixture(scope="module")
def dubbed_trailer():
    if not TRAILER.is_file():
        pytest.skip(f"real media not found: {TRAILER}")
    v = decode_video(TRAILER, DecodeConfig(short_side=96, max_fps=24.0, audio_rate=16000))
    sounds = load_one_shots(sorted((REPO / "sync_classifier" / "assets" / "drums").glob("*.ogg")), v.audio_rate)
    dubbed, times = dub_events(v, sounds, "motion")
    return dubbed, times


def test_dubbing_places_a_sound_at_each_motion_event(dubbed_trailer):
    v, times = dubbed_trailer
    assert len(times) >= 10 and np.all(np.diff(times) >= 0.5 - 1e-9)
    rms = lambda a, b: float(np.sqrt(np.mean(v.audio_slice(a, b) ** 2)))  # noqa: E731
    # right after an event the track is loud (a hit); the quiet original track is at 10 %
    assert np.median([rms(t, t + 0.05) for t in times]) > 5 * np.median([rms(t - 0.3, t - 0.25) for t in times])


def test_unshifted_audio_ranks_first_on_dubbed_real_footage(dubbed_trailer):
    v, _ = dubbed_trailer
    means = {}
    for shift in (0.0, 0.5, 1.0):
        rows = []
        for s0 in np.arange(0.0, v.duration - 3.0, 2.0):
            c = v.clip(s0, s0 + 2.0)
            audio = v.audio_slice(s0 + shift, s0 + shift + c.num_frames / v.fps)
            rows.append(av_align_scores(audio, v.audio_rate, flow_magnitudes(c.frames), v.fps))
        means[shift] = {k: float(np.nanmean([r[k] for r in rows])) for k in ("av_align", "av_align_pr", "av_align_star")}
    for k in ("av_align", "av_align_pr"):
        assert means[0.0][k] > max(means[0.5][k], means[1.0][k]) + 0.03, means
    assert means[0.0]["av_align_star"] < min(means[0.5]["av_align_star"], means[1.0]["av_align_star"]) - 0.5, means
