"""preprocess=asva|native: chosen from the checkpoint, selectable, and wired into P_Sync, the evaluation and
RelSync's inputs (the numbers themselves are checked against the authors' code in test_asva_golden.py)."""

import json

import numpy as np
import pytest
import torch

from media.encode import encode_mp4
from sync_classifier.asva_preprocess import asva_clips, resolve_preprocess
from sync_classifier.evaluate import main
from sync_classifier.families import make_family_video
from sync_classifier.score import SyncScorer
from tests.sync_classifier.test_asva import _random_state, _write_modules, their_shapes


@pytest.fixture(scope="module")
def authors_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("asva") / "modules"
    state = _random_state(their_shapes(a=(8, 8, 16, 16), v=(8, 8, 16, 16), dim=16), torch.Generator().manual_seed(3))
    for part in state.values():  # keep activations moderate (BN running_var must be positive)
        for k in part:
            if k.endswith("running_var"):
                part[k] = part[k].abs() + 1.0
    _write_modules(root, state, "safetensors")
    return root


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("vids")
    v = make_family_video(7, "motion", duration=4.0, size=48, fps=24.0)[0]
    (d / "a.mp4").write_bytes(encode_mp4(v.frames, v.fps, v.audio, v.audio_rate))
    return d / "a.mp4"


def test_mode_follows_the_checkpoint_and_can_be_chosen(authors_ckpt, tiny_model):
    assert SyncScorer.from_pretrained(authors_ckpt).preprocess == "asva"
    assert SyncScorer.from_pretrained(authors_ckpt, preprocess="native").preprocess == "native"
    assert SyncScorer.from_model(tiny_model).preprocess == "native"
    assert SyncScorer.from_model(tiny_model, preprocess="asva").preprocess == "asva"
    with pytest.raises(ValueError, match="preprocess='bicubic'"):
        resolve_preprocess("bicubic", tiny_model.spec)


def test_psync_under_asva_scores_the_shifted_clips_cut_from_the_file(authors_ckpt, video_file):
    scorer = SyncScorer.from_pretrained(authors_ckpt)
    p = scorer.psync([(video_file, 2.0)], shift=0.25)
    v, m = asva_clips(video_file, np.array([0.75, 1.0, 1.25]), scorer.spec)
    with torch.no_grad():
        a, e = scorer.model.encode_audio(m), scorer.model.encode_video(v)
        a2v = torch.softmax(scorer.model.head(a, e[[1, 1, 1]]), 0)[1]
        v2a = torch.softmax(scorer.model.head(a[[1, 1, 1]], e), 0)[1]
    np.testing.assert_allclose(p[0], [float(a2v), float(v2a)], atol=1e-5)
    decoded = make_family_video(7, "motion", duration=4.0, size=48, fps=24.0)[0]
    with pytest.raises(ValueError, match="source\\['path'\\]"):
        scorer.psync([(decoded, 2.0)])


def test_evaluate_uses_the_authors_cut_for_their_checkpoint(authors_ckpt, video_file, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--checkpoint", str(authors_ckpt), "--videos", str(video_file.parent), "--json", str(out),
                 "num_offsets=5", "min_offsets=3"]) == 0
    res = json.loads(out.read_text())
    assert res["preprocess"] == "asva" and res["n"] == 1 and res["offsets_used"] == {"5": 1}
    assert "preprocess asva" in capsys.readouterr().out
    assert main(["--checkpoint", str(authors_ckpt), "--synthetic", "1", "--families", "motion", "--json", str(out),
                 "num_offsets=3", "min_offsets=3", "synthetic_duration=2.2"]) == 0
    res = json.loads(out.read_text())
    assert res["preprocess"] == "native" and "needs video files" in res["preprocess_note"]
    assert main(["--checkpoint", str(authors_ckpt), "--synthetic", "1", "preprocess=asva"]) == 2
    assert "error: preprocess=asva" in capsys.readouterr().err


def test_relsync_inputs_and_phi_of_files(authors_ckpt, video_file):
    from evaluation.sync_metrics import load_scorer, phi_of_files, sync_inputs

    scorer = load_scorer(str(authors_ckpt))
    assert scorer.preprocess == "asva"
    v, m = sync_inputs(video_file, 1.0)
    assert v.shape == (3, 12, 224, 224) and m.shape == (1, 128, 204)
    phi = phi_of_files(scorer, [video_file], [1.0])
    np.testing.assert_allclose(phi, scorer.phi_inputs(v[None], m[None]), atol=1e-6)
    with pytest.raises(ValueError, match="preprocess=asva"):
        phi_of_files(load_scorer(str(authors_ckpt), preprocess="native"), [video_file], [1.0])


def test_psync_stage_passes_its_preprocess_option(tmp_path):
    pytest.importorskip("curate.filters.psync")
    from curate.stage import StageUnavailable, build_stage
    from sync_classifier.config import PRESETS
    from sync_classifier.model import SyncClassifier

    SyncClassifier(PRESETS["tiny"]().model, training_data="vggss").save_pretrained(tmp_path / "sync")
    bad = build_stage("psync", {"checkpoint": str(tmp_path / "sync"), "device": "cpu", "preprocess": "bicubic"})
    with pytest.raises(StageUnavailable, match="preprocess='bicubic'"):
        bad.check()
    for mode, want in (("auto", "native"), ("asva", "asva")):
        stage = build_stage("psync", {"checkpoint": str(tmp_path / "sync"), "device": "cpu", "preprocess": mode})
        stage.check()
        stage.setup()
        assert stage._scorer.preprocess == want


def test_psync_stage_takes_the_authors_checkpoint_with_their_cut(authors_ckpt, video_file):
    from curate.stage import build_stage

    stage = build_stage("psync", {"checkpoint": str(authors_ckpt), "device": "cpu"})
    stage.check()
    assert stage.provenance()["training_data"] == "vggss" and stage.curation_grade
    stage.setup()
    assert stage._scorer.preprocess == "asva"


def test_clip_past_the_audio_end_is_scored_on_silence_not_failed():
    """A shifted P_Sync clip at a file's end can start after the last audio frame: under asva that clip
    gets silence (as the native decode fills lost audio) instead of failing the whole video."""
    import numpy as np
    import torch

    from sync_classifier.asva_preprocess import clip_times, clips_from_decoded
    from sync_classifier.config import ClipSpec

    spec = ClipSpec(image_size=32, n_mels=16, num_frames=4, fps=4, duration=1.0)
    rng = np.random.default_rng(0)
    video = [(i / 8, rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for i in range(40)]  # 5 s at 8 fps
    audio = [(i * 0.1, rng.normal(size=(1600, 1)).astype(np.float32) * 0.1) for i in range(20)]  # ends at 2 s
    times = clip_times([0.5, 3.5], spec)
    v, m = clips_from_decoded(video, audio, 16000, times, spec)
    assert v.shape[0] == m.shape[0] == 2
    assert torch.isfinite(m).all()
    assert not torch.allclose(m[0], m[1])  # the first clip has sound, the second is silence
