import json

import pytest
import torch

from media.shards import write_shard
from sync_classifier.config import tiny
from sync_classifier.families import make_family_video
from sync_classifier.model import SyncClassifier
from train.sync_classifier import lr_at, main


def _log(out):
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"eval"' not in x]


def _state(out):
    return json.loads((out / "train_state.json").read_text())


def test_train_cli_tiny_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--preset", "tiny", "--steps", "2", "--out", str(out), "--no-progress", "--seed", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(f"to {out}")
    assert {"config.json", "model.safetensors", "train_state.json", "log.jsonl", "checkpoint-000002"} <= {p.name for p in out.iterdir()}
    state = _state(out)
    assert state["step"] == 2 and state["config"]["preset"] == "tiny" and state["source"] == "synthetic"
    m2 = SyncClassifier.from_pretrained(out)
    assert m2.training_data == "synthetic"
    w2 = m2.state_dict()["head.fc_in.weight"].clone()
    recs = _log(out)
    assert [r["step"] for r in recs] == [1, 2] and all({"loss", "acc_a2v", "acc_v2a", "steps_per_s", "stage", "lr"} <= r.keys() for r in recs)

    assert main(["--resume", str(out), "--steps", "3", "--no-progress"]) == 0
    state = _state(out)
    assert state["step"] == 3 and (out / "checkpoint-000003" / "optimizer.safetensors").is_file()
    assert [r["step"] for r in _log(out)] == [1, 2, 3]
    assert not torch.equal(SyncClassifier.from_pretrained(out).state_dict()["head.fc_in.weight"], w2)
    # the data settings of a run cannot change on resume
    assert main(["--resume", str(out), "lr=0.5"]) == 2
    assert "cannot change lr" in capsys.readouterr().err


def test_stage1_then_stage2_with_warmup_and_clipping(tmp_path):
    out = tmp_path / "run"
    rc = main(["--preset", "tiny", "--out", str(out), "--no-progress", "--steps", "3",
               "stage1_steps=2", "warmup_steps=2", "grad_clip=0.5", "families=[motion, camera]"])
    assert rc == 0
    recs = _log(out)
    assert [r["stage"] for r in recs] == [1, 1, 2]
    assert [r["lr"] for r in recs] == pytest.approx([5e-4, 1e-3, 1e-3])
    cfg = tiny()
    cfg.warmup_steps = 4
    assert lr_at(cfg, 0) == pytest.approx(cfg.lr / 4) and lr_at(cfg, 10) == cfg.lr


def test_cosine_schedule_decays_to_zero_after_the_warmup():
    cfg = tiny()
    cfg.lr, cfg.steps, cfg.warmup_steps, cfg.lr_schedule = 1e-3, 104, 4, "cosine"
    assert lr_at(cfg, 1) == pytest.approx(0.5e-3)  # warm-up unchanged
    assert lr_at(cfg, 4) == pytest.approx(1e-3)  # decay starts at the full rate
    assert lr_at(cfg, 54) == pytest.approx(0.5e-3)  # half way through the 100 decay steps
    assert lr_at(cfg, 104) == pytest.approx(0.0, abs=1e-12) and lr_at(cfg, 200) == pytest.approx(0.0, abs=1e-12)
    values = [lr_at(cfg, s) for s in range(4, 105)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_train_cli_on_shards_with_config_file(tmp_path):
    samples = []
    for s in range(2):
        v, _ = make_family_video(50 + s, "deform", duration=6.6, size=32)
        samples.append((f"vid{s}", v, {"label": "synthetic"}))
    write_shard(tmp_path / "train-000000.tar", samples)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("batch_size: 2\nlr: 0.0005\nshuffle_buffer: 1\nmodel:\n  head_dims: [8, 4]\n")
    out = tmp_path / "run"
    rc = main(["--preset", "tiny", "--config", str(cfg), "--shards", str(tmp_path / "*.tar"), "--steps", "1", "--out", str(out),
               "--no-progress", "weight_decay=0.0"])
    assert rc == 0
    state = _state(out)
    assert state["source"] == "shards" and state["config"]["batch_size"] == 2 and state["config"]["lr"] == 0.0005
    assert state["config"]["weight_decay"] == 0.0
    m = SyncClassifier.from_pretrained(out)
    assert m.config.head_dims == (8, 4)


def test_train_cli_on_video_folder_with_avid_init(tmp_path, tiny_cfg, caplog):
    from sync_classifier import write_synthetic_folder

    write_synthetic_folder(tmp_path / "videos", 1, seed=77, duration=6.6, size=32)
    torch.manual_seed(5)
    src = SyncClassifier(tiny_cfg.model)
    avid = {f"module.audio_model.{k}": v for k, v in src.audio_encoder.state_dict().items() if not k.startswith(("proj.", "norm."))}
    torch.save({"model": avid}, tmp_path / "avid.pth")
    out = tmp_path / "run"
    with caplog.at_level("INFO"):
        rc = main(["--preset", "tiny", "--videos", str(tmp_path / "videos"), "--init-avid", str(tmp_path / "avid.pth"),
                   "--steps", "1", "--batch-size", "1", "--out", str(out), "--no-progress", "shuffle_buffer=1"])
    assert rc == 0
    assert any("AVID init: loaded %d" % len(avid) in r.getMessage() for r in caplog.records)
    state = _state(out)
    assert state["source"] == "videos" and state["step"] == 1


@pytest.mark.parametrize("argv, message", [
    (["--shards", "/nonexistent/train-*.tar"], "error: no shards match '/nonexistent/train-*.tar'"),
    (["stage1_step=3"], "did you mean 'stage1_steps'"),
    (["lr=fast"], "lr='fast': expected a number"),
    (["--videos", "/nonexistent/dir"], "is not a folder"),
    (["families=[motion, jumping]"], "unknown family 'jumping'"),
    (["--resume", "/nonexistent/run"], "no train_state.json"),
    (["lr_schedule=cosin"], "lr_schedule='cosin': expected constant or cosine"),
    (["model.video_input=flow"], "model.video_input='flow': expected rgb or rgb_diff"),
    (["model.temporal_pool=max"], "model.temporal_pool='max': expected mean, keep or aligned"),
    (["model.temporal_pool=aligned"], "temporal_pool=aligned and head_fusion=time_product go together"),
])
def test_user_mistakes_exit_2_with_one_line_before_building(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["--preset", "tiny", "--out", str(out), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()


def test_avid_init_and_stage1_are_exclusive(tmp_path, capsys):
    (tmp_path / "avid.pth").write_bytes(b"x")
    rc = main(["--preset", "tiny", "--init-avid", str(tmp_path / "avid.pth"), "stage1_steps=5", "--out", str(tmp_path / "r")])
    assert rc == 2 and "replaces stage 1" in capsys.readouterr().err


def test_help_config_lists_settings(capsys):
    assert main(["--help-config"]) == 0
    text = capsys.readouterr().out
    assert "stage1_steps" in text and "model.spec.image_size" in text and "real_media" in text


def test_accelerate_code_path_on_cpu(tmp_path, monkeypatch):
    pytest.importorskip("accelerate")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # as `accelerate launch` sets it
    out = tmp_path / "run"
    assert main(["--preset", "tiny", "--steps", "2", "--out", str(out), "--no-progress", "grad_clip=1.0", "stage1_steps=1"]) == 0
    recs = _log(out)
    assert [r["stage"] for r in recs] == [1, 2]
    assert _state(out)["step"] == 2


def test_init_from_starts_from_a_checkpoint_and_rejects_weights_that_do_not_fit(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["--preset", "tiny", "--steps", "1", "--out", str(first), "--no-progress", "--seed", "1"]) == 0
    # no steps: the second run's weights are exactly the first run's (a curriculum's starting point)
    assert main(["--preset", "tiny", "--steps", "0", "--out", str(second), "--no-progress", "--seed", "2",
                 "--init-from", str(first), "families=[motion]"]) == 0
    a, b = SyncClassifier.from_pretrained(first).state_dict(), SyncClassifier.from_pretrained(second).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert main(["--preset", "tiny", "--steps", "0", "--out", str(tmp_path / "x"), "--no-progress",
                 "--init-from", str(first), "model.embed_dim=8"]) == 2
    assert "weights do not fit" in capsys.readouterr().err
    # settings that leave the weights' shapes alone (here: per-place video embeddings) may change
    third = tmp_path / "third"
    assert main(["--preset", "tiny", "--steps", "0", "--out", str(third), "--no-progress",
                 "--init-from", str(first), "model.video_cells=2"]) == 0
    c = SyncClassifier.from_pretrained(third)
    assert c.config.video_cells == 2 and all(torch.equal(a[k], c.state_dict()[k]) for k in a)
    assert main(["--preset", "tiny", "--out", str(tmp_path / "y"), "--init-from", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_run_of_the_old_pickle_format_is_refused_in_one_line(tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    torch.save({"step": 1}, old / "train_state.pt")
    assert main(["--resume", str(old), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "older trainer" in err[0] and "--init-from" in err[0]
