"""RelSync / P_Align formulas with the shipped sync classifier, and the protocols' clip cutting."""

from __future__ import annotations

import numpy as np
import pytest

from tests.evaluation.eval_helpers import event_clip
from media.decode import DecodedVideo
from evaluation.protocols import PROTOCOLS, clip_starts, cut
from evaluation.sync_metrics import load_scorer, p_align, relsync


def test_relsync_is_half_for_the_same_video_and_follows_the_softmax():
    scorer = load_scorer("sync_classifier/checkpoints/small")
    frames, audio = event_clip([2, 6, 10], fps=6.0, seconds=2.0, size=64)
    phi_a = scorer.phi(audio[None], frames[None])
    phi_b = scorer.phi(audio[None], frames[None])
    assert relsync(phi_a, phi_b)[0] == pytest.approx(0.5, abs=1e-4)
    assert relsync([2.0], [0.5])[0] == pytest.approx(np.exp(2.0) / (np.exp(0.5) + np.exp(2.0)), rel=1e-12)
    assert relsync([-800.0], [0.0])[0] == pytest.approx(0.0, abs=1e-12)  # stable for large gaps


def test_p_align_is_the_mean_two_way_softmax_over_frames():
    ia = np.array([0.3, 0.1, 0.2])
    expected = np.mean(np.exp(ia) / (np.exp(0.2) + np.exp(ia)))
    assert p_align(ia, 0.2) == pytest.approx(expected, rel=1e-12)
    assert p_align(np.full(4, 0.25), 0.25) == pytest.approx(0.5)


def test_missing_sync_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_scorer(str(tmp_path / "nowhere"))


def test_avsync15_cuts_head_centre_tail_at_6fps_256():
    p = PROTOCOLS["avsync15"]
    assert clip_starts(10.0, p, np.random.default_rng(0)) == [0.0, 4.0, 8.0]
    frames, audio = event_clip([5, 15], fps=10.0, seconds=10.0, size=64)
    video = DecodedVideo(frames, 10.0, np.zeros(160000, np.float32), 16000)
    f, a, fps = cut(video, 4.0, p.fps, p.num_frames, p.size)
    assert f.shape == (12, 256, 256, 3) and f.dtype == np.uint8 and a.shape == (32000,) and fps == 6.0
    assert p.skip_first_frame and p.clip_seconds == pytest.approx(2.0)


def test_jointdit_random_clip_is_seeded_and_inside_the_video():
    p = PROTOCOLS["jointdit"]
    s1 = clip_starts(5.0, p, np.random.default_rng(7))
    assert s1 == clip_starts(5.0, p, np.random.default_rng(7)) and 0.0 <= s1[0] <= 3.0
    assert (p.num_frames, p.fps, p.samples_per_reference) == (14, 7.0, {"avsync15": 5, "greatesthits": 3, "landscape": 3})
    assert clip_starts(1.5, p, np.random.default_rng(0)) == [0.0]  # shorter than a clip: from the start
