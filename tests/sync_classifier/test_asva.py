"""The authors' released classifier (lzhangbj/ASVA `modules/`) loads with its names, shapes and preprocessing."""

import json

import pytest
import torch

from sync_classifier.asva import CLIP_MEAN, CLIP_STD, asva_key_map
from sync_classifier.config import paper
from sync_classifier.model import SyncClassifier
from sync_classifier.score import SyncScorer


def _bn(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def their_shapes(a=(64, 128, 256, 512), v=(64, 128, 256, 512), dim=512):
    """Parameter names and shapes of their AudioConv2DNet, VideoR2Plus1DNet and FCHead(dim), written out
    from their module definitions (not from our model)."""
    audio = {"conv1.0.weight": (a[0], 1, 7, 7), **_bn("conv1.1", a[0])}
    cin = a[0]
    for i, c in enumerate(a, start=1):
        audio[f"block{i}.conv1.weight"] = (c, cin, 3, 3)
        audio.update(_bn(f"block{i}.bn1", c))
        audio[f"block{i}.conv2.weight"] = (c, c, 3, 3)
        audio.update(_bn(f"block{i}.bn2", c))
        cin = c
    video = {"conv1.0.weight": (v[0], 3, 3, 7, 7), **_bn("conv1.1", v[0])}
    cin = v[0]
    for s, c in enumerate(v, start=2):
        for u in range(2):
            p = f"conv{s}x.{u}"
            i = cin if u == 0 else c
            video[f"{p}.spt_conv1.weight"] = (c, i, 1, 3, 3)
            video.update(_bn(f"{p}.spt_bn1", c))
            video[f"{p}.tmp_conv1.weight"] = (c, c, 3, 1, 1)
            video.update(_bn(f"{p}.tmp_bn1", c))
            video[f"{p}.spt_conv2.weight"] = (c, c, 1, 3, 3)
            video.update(_bn(f"{p}.spt_bn2", c))
            video[f"{p}.tmp_conv2.weight"] = (c, c, 3, 1, 1)
            video.update(_bn(f"{p}.out_bn", c))
            if u == 0 and (i != c or s > 2):
                video[f"{p}.res_conv.weight"] = (c, i, 1, 1, 1)
        cin = c
    head = {"fc.0.weight": (dim, 2 * dim), "fc.0.bias": (dim,), "fc.3.weight": (dim // 2, dim), "fc.3.bias": (dim // 2,),
            "fc.6.weight": (1, dim // 2), "fc.6.bias": (1,)}
    return {"audio_encoder": audio, "video_encoder": video, "head": head}


def test_key_map_is_complete_and_one_to_one_at_paper_size():
    shapes = their_shapes()
    mapping = asva_key_map(shapes)
    with torch.device("meta"):
        ours = SyncClassifier(paper().model).state_dict()
    assert len(set(mapping.values())) == len(mapping)  # injective
    assert set(mapping.values()) == set(ours)  # onto: every tensor of ours comes from theirs
    for (part, k), o in mapping.items():
        assert tuple(ours[o].shape) == shapes[part][k], (part, k, o)


def _random_state(shapes, gen):
    out = {}
    for part, d in shapes.items():
        out[part] = {k: (torch.randint(0, 100, s, generator=gen) if k.endswith("num_batches_tracked")
                         else torch.randn(s, generator=gen)) for k, s in d.items()}
    return out


def _write_modules(root, state, fmt):
    classes = {"audio_encoder": "AudioConv2DNet", "video_encoder": "VideoR2Plus1DNet", "head": "FCHead"}
    for part, sd in state.items():
        d = root / part
        d.mkdir(parents=True)
        cfg = {"_class_name": classes[part], "_diffusers_version": "0.21.4"}
        cfg.update({"dim": 32, "out_dim": 1, "dropout": 0.0} if part == "head" else {"pretrained": True})
        (d / "config.json").write_text(json.dumps(cfg))
        if fmt == "bin":
            torch.save(sd, d / "diffusion_pytorch_model.bin")
        else:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_released_layout_loads_every_tensor(tmp_path, fmt):
    gen = torch.Generator().manual_seed(0)
    shapes = their_shapes(a=(8, 8, 16, 16), v=(8, 8, 16, 16), dim=16)
    state = _random_state(shapes, gen)
    modules = tmp_path / "vggss_sync_contrast" / "ckpts" / "checkpoint-40000" / "modules"
    _write_modules(modules, state, fmt)
    for path in (modules, modules.parents[2], modules / "head" / "config.json"):  # folder, run folder, a file inside
        model = SyncClassifier.from_pretrained(path)
        sd = model.state_dict()
        for (part, k), o in asva_key_map(state).items():
            assert torch.equal(sd[o], state[part][k]), o
        assert model.training_data == "vggss"
    spec = model.spec
    assert spec.image_size == 224 and spec.resize == "bicubic" and spec.n_mels == 128 and spec.mel_frames == 204
    assert spec.video_mean == CLIP_MEAN and spec.video_std == CLIP_STD and (spec.fps, spec.num_frames) == (6.0, 12)
    cfg = model.config
    assert cfg.temporal_pool == "mean" and cfg.head_fusion == "concat" and not cfg.embed_norm and cfg.video_time_stride == 2
    scorer = SyncScorer.from_pretrained(modules)
    assert scorer.training_data == "vggss" and scorer.curation_grade


def test_their_head_computes_what_ours_computes(tmp_path):
    """FCHead: Linear(2d, d) -> Dropout -> ReLU -> Linear(d, d/2) -> Dropout -> ReLU -> Linear(d/2, 1) on [a, v]."""
    gen = torch.Generator().manual_seed(1)
    shapes = their_shapes(a=(8, 8, 16, 16), v=(8, 8, 16, 16), dim=16)
    state = _random_state(shapes, gen)
    _write_modules(tmp_path / "modules", state, "bin")
    model = SyncClassifier.from_pretrained(tmp_path / "modules")
    h = state["head"]
    a, v = torch.randn(5, 16, generator=gen), torch.randn(5, 16, generator=gen)
    x = torch.relu(torch.cat([a, v], 1) @ h["fc.0.weight"].T + h["fc.0.bias"])
    x = torch.relu(x @ h["fc.3.weight"].T + h["fc.3.bias"])
    want = (x @ h["fc.6.weight"].T + h["fc.6.bias"])[:, 0]
    assert torch.allclose(model.head(a, v), want, atol=1e-5)


def test_missing_or_foreign_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SyncClassifier.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="audio_encoder/, video_encoder/, head/"):
        SyncClassifier.from_pretrained(tmp_path / "empty")
    shapes = their_shapes(a=(8, 8, 16, 16), v=(8, 8, 16, 16), dim=16)
    state = _random_state(shapes, torch.Generator().manual_seed(0))
    del state["head"]["fc.3.bias"]
    _write_modules(tmp_path / "m", state, "bin")
    with pytest.raises(ValueError, match="lacks 1 tensors"):
        SyncClassifier.from_pretrained(tmp_path / "m")
