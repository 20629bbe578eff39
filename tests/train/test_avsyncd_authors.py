"""Golden checks against the AVSync15 authors' released AVSyncD code (lzhangbj/ASVA at 6587938).

The fixtures in tests/fixtures/asva_avsyncd/ were made by running their `AudioUNet3DConditionModel` at toy size
(make_fixtures.py there); the weights are regenerated here from the same seeded rule, only inputs and outputs
are stored."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from train.models.avsyncd import AVSyncDUNet, asva_config, load_asva_unet, segment_audio_tokens

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "asva_avsyncd"
TINY_ASVA = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=[32, 64],
                 down_block_types=["FFSpatioAudioTempCrossAttnDownBlock3D", "FFSpatioTempResDownBlock3D"],
                 up_block_types=["FFSpatioTempResUpBlock3D", "FFSpatioAudioTempCrossAttnUpBlock3D"],
                 mid_block_type="FFSpatioAudioTempCrossAttnUNetMidBlock3D", norm_num_groups=8,
                 cross_attention_dim=32, attention_head_dim=4, audio_cross_attention_dim=32,
                 _class_name="AudioUNet3DConditionModel")


def fill_state(shapes: dict) -> dict[str, torch.Tensor]:
    """The fixture script's rule: generator seeded by crc32(key); norm weights 1 + 0.1 N, the rest 0.2 N."""
    out = {}
    for k, shape in shapes.items():
        g = torch.Generator().manual_seed(zlib.crc32(k.encode()))
        x = torch.randn(tuple(shape), generator=g, dtype=torch.float64)
        out[k] = 1 + 0.1 * x if ("norm" in k and k.endswith("weight")) else 0.2 * x
    return out


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(FIX / "unet_tiny.npz"))


@pytest.fixture(scope="module")
def asva_folder(tmp_path_factory, golden):
    """The authors' checkpoint layout (modules/unet/config.json + weights) with the seeded weights."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("asva") / "modules" / "unet"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(TINY_ASVA))
    shapes = json.loads(str(golden["keys"]))
    save_file({k: v.contiguous() for k, v in fill_state(shapes).items()}, str(d / "diffusion_pytorch_model.safetensors"))
    return d.parent


def _run(model: AVSyncDUNet, golden) -> torch.Tensor:
    model = model.double().eval()
    f = golden["sample"].shape[2]
    sample = torch.from_numpy(golden["sample"]).double().permute(0, 2, 1, 3, 4)  # b c f h w -> b f c h w
    audio = segment_audio_tokens(torch.from_numpy(golden["audio"]).double(), f)
    with torch.no_grad():
        eps = model(sample, torch.from_numpy(golden["timestep"]), torch.from_numpy(golden["text"]).double(), audio).sample
    return eps.permute(0, 2, 1, 3, 4)


def test_authors_layout_has_exactly_our_keys(golden):
    shapes = json.loads(str(golden["keys"]))
    ours = {k: tuple(v.shape) for k, v in AVSyncDUNet(**asva_config(TINY_ASVA)).state_dict().items()}
    assert ours == {k: tuple(v) for k, v in shapes.items()}


def test_authors_unet_output_reproduced(golden, asva_folder):
    """Their checkpoint layout loads with 5-D GroupNorm switched on and gives their eps within 1e-5."""
    model = load_asva_unet(asva_folder)
    assert model.config.groupnorm_over_frames
    eps = _run(model, golden)
    assert eps.shape == golden["out"].shape
    np.testing.assert_allclose(eps.numpy(), golden["out"], atol=1e-5, rtol=0)


def test_per_frame_groupnorm_differs_from_authors(golden, asva_folder):
    """The same weights with per-frame GroupNorm are measurably not the authors' network (the switch matters)."""
    model = load_asva_unet(asva_folder)
    model.register_to_config(groupnorm_over_frames=False)
    diff = np.abs(_run(model, golden).numpy() - golden["out"]).max()
    assert diff > 1e-2


def test_segment_masks_match_authors():
    """segment_audio_tokens gathers exactly the tokens their segment masks keep, in order."""
    m = np.load(FIX / "segment_masks.npz")
    n = 1 + 12 * 19
    ids = torch.arange(n, dtype=torch.float64)[None, :, None]  # token i carries value i
    for key in ("f3", "f5", "f12"):
        masks = m[key]
        got = segment_audio_tokens(ids, masks.shape[0])[0, :, :, 0].long().numpy()
        want = np.stack([np.flatnonzero(row) for row in masks])
        np.testing.assert_array_equal(got, want)
