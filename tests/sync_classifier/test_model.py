import copy

import pytest
import torch

from sync_classifier.config import paper, small
from sync_classifier.frames import video_to_tensor
from sync_classifier.model import SyncClassifier, load_avid
from train.sync_classifier import train_step


def _r2p1d_params(cin, cout, stride2):
    n = cin * cout * 9 + cout * cout * 3 + cout * cout * 9 + cout * cout * 3 + 4 * 2 * cout
    if cin != cout or stride2:
        n += cin * cout
    return n


def test_paper_preset_matches_table1_on_meta_device():
    cfg = paper().model
    with torch.device("meta"):
        model = SyncClassifier(cfg)
        v = model.video_encoder.features(torch.empty(2, 3, 12, 224, 224))
        a = model.audio_encoder.features(torch.empty(2, 1, 128, 204))
        phi = model.head(model.audio_encoder(torch.empty(2, 1, 128, 204)), model.video_encoder(torch.empty(2, 3, 12, 224, 224)))
    # Table 1, video: conv1 (+max pool) 64x12x56x56, blocks 64x12x56x56, 128x6x28x28, 256x3x14x14, 512x2x7x7
    assert [tuple(x.shape[1:]) for x in v] == [(64, 12, 56, 56), (64, 12, 56, 56), (128, 6, 28, 28), (256, 3, 14, 14), (512, 2, 7, 7)]
    # Table 1, audio: conv1 64x64x102, blocks 64x32x51, 128x16x26, 256x8x13, 512x8x13
    assert [tuple(x.shape[1:]) for x in a] == [(64, 64, 102), (64, 32, 51), (128, 16, 26), (256, 8, 13), (512, 8, 13)]
    assert phi.shape == (2,)
    # head 1024 -> 512 -> 256 -> 1
    lin = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(1024, 512), (512, 256), (256, 1)]
    # parameter counts from the layer list of Table 1 (R(2+1)D-18 shape: 2 residual units per stage)
    video = 3 * 64 * 3 * 49 + 2 * 64
    cin = 64
    for i, c in enumerate((64, 128, 256, 512)):
        video += _r2p1d_params(cin, c, i > 0) + _r2p1d_params(c, c, False)
        cin = c
    audio = 1 * 64 * 49 + 2 * 64
    cin = 64
    for c in (64, 128, 256, 512):
        audio += cin * c * 9 + c * c * 9 + 4 * c
        cin = c
    head = 1024 * 512 + 512 + 512 * 256 + 256 + 256 + 1
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.video_encoder) == video
    assert count(model.audio_encoder) == audio
    assert count(model.head) == head
    # AVID-CMA's (2+1)D units keep cout channels between the spatial and temporal convs, so this
    # R(2+1)D-18 has 15.4 M parameters (torchvision's r2plus1d_18 expands them: 31.3 M)
    assert 15.0e6 < video < 15.8e6 and 4.0e6 < audio < 5.0e6


def test_one_train_step_reaches_every_parameter(tiny_cfg, tiny_model):
    b, k, s = 2, 5, tiny_cfg.model.spec
    torch.manual_seed(1)
    batch = {
        "mel": torch.randn(b, k, 1, s.n_mels, s.mel_frames),
        "frames": torch.randint(0, 256, (b, k, s.num_frames, s.image_size, s.image_size, 3), dtype=torch.uint8),
    }
    opt = torch.optim.SGD(tiny_model.parameters(), lr=0.0)
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    m = train_step(tiny_model, batch, opt, tiny_cfg)
    assert m["loss"] > 0
    # the head's last bias adds one constant to every logit: the softmax over offsets cancels it
    last_bias = [n for n, _ in tiny_model.named_parameters() if n.startswith("head.")][-1]
    assert last_bias.endswith("bias")
    for n, p in tiny_model.named_parameters():
        assert p.grad is not None, n
        if n == last_bias:
            assert p.grad.abs().sum() < 1e-4, n  # zero up to rounding (exactly 0 on some CPUs)
        else:
            assert p.grad.abs().sum() > 0, f"no gradient reaches {n}"
        assert torch.equal(p.detach(), before[n])  # lr 0


def test_pairwise_equals_paired_head(tiny_model):
    a, v = torch.randn(2, 4, 16), torch.randn(2, 5, 16)
    full = tiny_model.head.pairwise(a, v)
    assert full.shape == (2, 4, 5)
    for i in range(4):
        for j in range(5):
            assert torch.allclose(full[:, i, j], tiny_model.head(a[:, i], v[:, j]), atol=1e-5)


def test_save_load_round_trip(tmp_path, tiny_cfg, tiny_model):
    tiny_model.eval()
    s = tiny_cfg.model.spec
    mel = torch.randn(3, 1, s.n_mels, s.mel_frames)
    vid = video_to_tensor(torch.randint(0, 256, (3, s.num_frames, 40, 50, 3), dtype=torch.uint8), s.image_size)
    ref = tiny_model(mel, vid)
    tiny_model.save_pretrained(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"config.json", "model.safetensors"}
    loaded = SyncClassifier.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == tiny_model.config
    assert torch.allclose(loaded(mel, vid), ref, atol=1e-6)


def test_rgb_diff_input_adds_the_frame_difference(tiny_cfg):
    cfg = tiny_cfg.model
    cfg.video_input = "rgb_diff"
    enc = SyncClassifier(cfg).video_encoder.eval()
    assert enc.conv1[0].weight.shape[1] == 6
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 32, 32)
    diff = torch.zeros_like(x)
    diff[:, :, 1:] = x[:, :, 1:] - x[:, :, :-1]
    expected = enc.conv1(torch.cat([x, diff], dim=1))
    assert torch.allclose(enc.features(x)[0], expected, atol=1e-5)
    # a still video has zero difference channels: the stem's weights on them do not matter
    still = x[:, :, :1].expand(-1, -1, 12, -1, -1).contiguous()
    before = enc.features(still)[0]
    with torch.no_grad():
        enc.conv1[0].weight[:, 3:].normal_()
    assert torch.allclose(enc.features(still)[0], before, atol=1e-5)
    assert not torch.allclose(enc.features(x)[0], expected, atol=1e-3)  # a moving one's do
    cfg.video_input = "flow"
    with pytest.raises(ValueError, match="video_input"):
        SyncClassifier(cfg)


@pytest.mark.parametrize("video_input", ["rgb", "rgb_diff"])
def test_channels_last_layout_gives_the_same_embeddings_and_gradients(tiny_cfg, monkeypatch, video_input):
    cfg = tiny_cfg.model
    cfg.video_input = video_input
    torch.manual_seed(0)
    enc = SyncClassifier(cfg).video_encoder.train()
    x = torch.randn(3, 3, 12, 32, 32)
    results = {}
    for channels_last in (True, False):
        monkeypatch.setattr(type(enc), "channels_last_on_cpu", channels_last)
        enc.zero_grad()
        out = enc(x)
        out.square().sum().backward()
        results[channels_last] = (out.detach(), enc.conv1[0].weight.grad.clone())
    assert torch.allclose(results[True][0], results[False][0], atol=1e-4)
    g_last, g_contiguous = results[True][1], results[False][1]
    assert (g_last - g_contiguous).norm() <= 1e-3 * g_contiguous.norm()  # float sums in another order


def test_small_preset_is_cpu_sized():
    n = sum(p.numel() for p in SyncClassifier(small().model).parameters())
    assert n * 4 < 20e6  # shipped fp32 safetensors under 20 MB


def test_load_avid_maps_encoder_keys(tmp_path, tiny_cfg):
    torch.manual_seed(3)
    src = SyncClassifier(tiny_cfg.model)
    state = {}
    for k, v in src.video_encoder.state_dict().items():
        if not k.startswith(("proj.", "norm.")):
            state[f"module.video_model.{k}"] = v.clone()
    for k, v in src.audio_encoder.state_dict().items():
        if not k.startswith(("proj.", "norm.")):
            state[f"module.audio_model.{k}"] = v.clone()
    state["module.video_model.conv1.0.weight"] = torch.randn(7, 3, 3, 7, 7)  # wrong shape: reported, not loaded
    state["module.head.fc.weight"] = torch.randn(2, 2)  # AVID projection head: not ours
    torch.save({"model": state, "epoch": 5}, tmp_path / "avid.pth")

    torch.manual_seed(4)
    dst = SyncClassifier(tiny_cfg.model)
    rep = load_avid(dst, tmp_path / "avid.pth")
    assert rep["mismatched"] == ["video_encoder.conv1.0.weight"]
    assert rep["unexpected"] == ["module.head.fc.weight"]
    assert "video_encoder.conv2x.0.tmp_conv1.weight" in rep["loaded"]
    assert "audio_encoder.block4.conv2.weight" in rep["loaded"]
    ours_only = {k for k in dst.state_dict() if k.startswith(("video_encoder.proj.", "audio_encoder.proj.", "video_encoder.norm.", "audio_encoder.norm."))}
    assert set(rep["missing"]) == {"video_encoder.conv1.0.weight"} | ours_only
    assert torch.equal(dst.video_encoder.conv3x[0].spt_conv1.weight, src.video_encoder.conv3x[0].spt_conv1.weight)
    assert torch.equal(dst.audio_encoder.block2.bn1.running_mean, src.audio_encoder.block2.bn1.running_mean)
    assert not torch.equal(dst.video_encoder.conv1[0].weight, src.video_encoder.conv1[0].weight)


def test_paper_preset_gradients_reach_every_parameter():
    """Table-1-sized model (paper preset); only the input is smaller (64 px) to keep the test fast."""
    cfg = paper()
    cfg.model.spec.image_size = 64
    torch.manual_seed(0)
    model = SyncClassifier(cfg.model)
    s = cfg.model.spec
    batch = {
        "mel": torch.randn(1, 3, 1, s.n_mels, s.mel_frames),
        "frames": torch.randint(0, 256, (1, 3, s.num_frames, 64, 64, 3), dtype=torch.uint8),
    }
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    train_step(model, batch, opt, cfg)
    # the head's last bias adds the same constant to every offset's score, which the offset softmax cancels:
    # its gradient is zero up to rounding (exactly zero or ~1e-9 depending on the CPU), so it is checked as ~0
    last_bias = "head.mlp.3.bias"
    missing = [n for n, p in model.named_parameters() if n != last_bias and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing, missing
    grads = dict(model.named_parameters())
    assert grads[last_bias].grad is not None and grads[last_bias].grad.abs().max() < 1e-5


def test_checkpoint_folder_or_file_and_training_data(tmp_path, tiny_model):
    import json

    import pytest

    from sync_classifier.score import SyncScorer

    tiny_model.training_data = "synthetic"
    tiny_model.save_pretrained(tmp_path / "ck")
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["training_data"] == "synthetic"
    for p in (tmp_path / "ck", tmp_path / "ck" / "model.safetensors", tmp_path / "ck" / "config.json"):
        m = SyncClassifier.from_pretrained(p)
        assert m.training_data == "synthetic"
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), tiny_model.state_dict().values()))
    s = SyncScorer.from_pretrained(tmp_path / "ck")
    assert s.training_data == "synthetic" and s.curation_grade is False
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    del cfg["training_data"]  # older checkpoints do not say
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    assert SyncScorer.from_pretrained(tmp_path / "ck").training_data == "unknown"
    cfg["training_data"] = "vggsound"
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    assert SyncScorer.from_pretrained(tmp_path / "ck").curation_grade is True
    (tmp_path / "ck" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SyncClassifier.from_pretrained(tmp_path / "ck")


def _tiny_model(tiny_cfg, **model_settings):
    cfg = tiny_cfg.model
    for key, value in model_settings.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    return SyncClassifier(cfg).eval()


def _aligned(tiny_cfg):
    return _tiny_model(tiny_cfg, temporal_pool="aligned", head_fusion="time_product")


def _three_clips(spec):
    return (torch.randn(3, 1, spec.n_mels, spec.mel_frames),
            torch.randn(3, 3, spec.num_frames, spec.image_size, spec.image_size))


def _assert_pairwise_equals_paired(model, mel, video):
    full = model.head.pairwise(model.encode_audio(mel)[None], model.encode_video(video)[None])[0]
    for i in range(len(mel)):
        for j in range(len(video)):
            assert torch.allclose(full[i, j], model(mel[i : i + 1], video[j : j + 1])[0], atol=1e-4)


def test_aligned_encoders_give_one_embedding_per_frame_time(tiny_cfg):
    model = _aligned(tiny_cfg)
    spec, d = model.spec, model.config.embed_dim
    mel, video = _three_clips(spec)
    # the audio trunk ends with 13 time steps for 204 mel frames: resampled to the 12 frame times
    assert model.audio_encoder.features(mel)[-1].shape[-1] != spec.num_frames
    assert model.encode_audio(mel).shape == (3, d * spec.num_frames)
    assert model.encode_video(video).shape == (3, d * spec.num_frames)
    _assert_pairwise_equals_paired(model, mel, video)


def test_time_product_head_scores_only_what_coincides_in_time(tiny_cfg):
    head = _aligned(tiny_cfg).head
    d, t = head.embed_dim, head.frames
    torch.manual_seed(1)
    a, v = torch.randn(5, d, t), torch.randn(5, d, t)
    phi = head(a.flatten(1), v.flatten(1))
    # the same reordering of time in both modalities changes nothing (weights shared over time)
    perm = torch.randperm(t)
    assert torch.allclose(head(a[..., perm].flatten(1), v[..., perm].flatten(1)), phi, atol=1e-5)
    # reordering only one modality's time does
    assert not torch.allclose(head(a[..., perm].flatten(1), v.flatten(1)), phi, atol=1e-3)
    # features at times where the other modality has none score like no features at all
    a_early, v_late = a.clone(), v.clone()
    a_early[..., t // 2 :] = 0
    v_late[..., : t // 2] = 0
    silent = head(torch.zeros_like(a).flatten(1), torch.zeros_like(v).flatten(1))
    assert torch.allclose(head(a_early.flatten(1), v_late.flatten(1)), silent, atol=1e-5)
    assert not torch.allclose(head(a.flatten(1), v_late.flatten(1)), silent, atol=1e-3)


def test_aligned_pooling_and_time_product_head_go_together(tiny_cfg):
    cfg = tiny_cfg.model
    cfg.temporal_pool = "aligned"
    with pytest.raises(ValueError, match="go together"):
        SyncClassifier(cfg)
    cfg.temporal_pool, cfg.head_fusion = "keep", "time_product"
    with pytest.raises(ValueError, match="go together"):
        SyncClassifier(cfg)
    cfg.temporal_pool, cfg.head_fusion = "max", "concat_product"
    with pytest.raises(ValueError, match="temporal_pool"):
        SyncClassifier(cfg)


def test_video_cells_embed_each_place_and_pairwise_equals_paired(tiny_cfg):
    model = _tiny_model(tiny_cfg, video_cells=2)
    spec, d = model.spec, model.config.embed_dim
    mel, video = _three_clips(spec)
    e = model.encode_video(video)
    assert e.shape == (3, 4 * d) and model.encode_audio(mel).shape == (3, d)
    _assert_pairwise_equals_paired(model, mel, video)
    # a change in one corner of the picture moves that place's embedding more than the opposite corner's
    s = spec.image_size
    moved = video.clone()
    moved[:, :, 6:, : s // 2, : s // 2] += 3.0
    delta = (model.encode_video(moved) - e).reshape(3, 4, d).norm(dim=-1)  # places in row-major order
    assert (delta[:, 0] > 1.3 * delta[:, 3]).all(), delta  # receptive fields overlap: not 0 at the far corner


def test_video_cells_score_is_the_log_mean_exp_over_places(tiny_cfg):
    head = _tiny_model(tiny_cfg, video_cells=2).head
    d = head.embed_dim
    torch.manual_seed(2)
    a, v = torch.randn(5, d), torch.randn(5, 4, d)
    one_place = copy.copy(head)  # the same weights, scoring one place
    one_place.places = 1
    per_place = torch.stack([one_place(a, v[:, k]) for k in range(4)], -1)
    assert torch.allclose(head(a, v.flatten(1)), torch.logsumexp(per_place, -1) - torch.log(torch.tensor(4.0)), atol=1e-5)


def test_video_cells_checked(tiny_cfg):
    cfg = tiny_cfg.model
    cfg.video_cells = 0
    with pytest.raises(ValueError, match="video_cells"):
        SyncClassifier(cfg)
    cfg.video_cells, cfg.temporal_pool, cfg.head_fusion = 2, "aligned", "time_product"
    with pytest.raises(ValueError, match="video_cells"):
        SyncClassifier(cfg)
