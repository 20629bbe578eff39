import json

import torch

from curate.shards import write_shard
from sync_classifier import make_sounding_video
from sync_classifier.model import SyncClassifier
from sync_classifier.train import main


def _log(out):
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def test_train_cli_tiny_then_resume(tmp_path):
    out = tmp_path / "run"
    main(["--preset", "tiny", "--steps", "2", "--out", str(out), "--no-progress", "--seed", "1"])
    assert {"config.json", "model.safetensors", "train_state.pt", "log.jsonl"} <= {p.name for p in out.iterdir()}
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert state["step"] == 2 and state["config"]["preset"] == "tiny" and state["source"] == "synthetic"
    m2 = SyncClassifier.from_pretrained(out)
    w2 = m2.state_dict()["head.fc_in.weight"].clone()
    recs = _log(out)
    assert [r["step"] for r in recs] == [1, 2] and all({"loss", "acc_a2v", "acc_v2a", "steps_per_s"} <= r.keys() for r in recs)

    main(["--resume", str(out), "--steps", "3", "--no-progress"])
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert state["step"] == 3 and len(state["optimizer"]["state"]) > 0
    assert [r["step"] for r in _log(out)] == [1, 2, 3]
    assert not torch.equal(SyncClassifier.from_pretrained(out).state_dict()["head.fc_in.weight"], w2)


def test_train_cli_on_shards_with_config_file(tmp_path):
    samples = []
    for s in range(2):
        v, _ = make_sounding_video(50 + s, duration=6.6, size=32)
        samples.append((f"vid{s}", v, {"label": "synthetic"}))
    write_shard(tmp_path / "train-000000.tar", samples)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("batch_size: 2\nlr: 0.0005\nmodel:\n  head_dims: [8, 4]\n")
    out = tmp_path / "run"
    main(["--preset", "tiny", "--config", str(cfg), "--shards", str(tmp_path / "*.tar"), "--steps", "1", "--out", str(out), "--no-progress"])
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert state["source"] == "shards" and state["config"]["batch_size"] == 2 and state["config"]["lr"] == 0.0005
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
        main(["--preset", "tiny", "--videos", str(tmp_path / "videos"), "--init-avid", str(tmp_path / "avid.pth"),
              "--steps", "1", "--batch-size", "1", "--out", str(out), "--no-progress"])
    assert any("AVID init: loaded %d" % len(avid) in r.getMessage() for r in caplog.records)
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert state["source"] == "videos" and state["step"] == 1
