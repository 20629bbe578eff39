"""Load the AVSync15 authors' released sync classifier (lzhangbj/ASVA, trained on VGGSS) as distributed.

Their checkpoint is a folder `.../checkpoint-40000/modules/` with three diffusers-style subfolders,
each a `config.json` (`_class_name` AudioConv2DNet / VideoR2Plus1DNet / FCHead) and the weights as
`diffusion_pytorch_model.bin` (torch pickle, what their loader reads with use_safetensors=False) or
`diffusion_pytorch_model.safetensors`. Parameter names inside the parts:

- audio_encoder: `conv1.{0,1}.*` (7x7 conv, BN), `block{1..4}.{conv1,bn1,conv2,bn2}.*` — the same
  names as our AudioEncoder;
- video_encoder: `conv1.{0,1}.*` (3x7x7 conv, BN), `conv{2..5}x.{0,1}.{spt_conv1,spt_bn1,tmp_conv1,
  tmp_bn1,spt_conv2,spt_bn2,tmp_conv2,out_bn,res_conv}.*` — the same names as our VideoEncoder;
- head: `fc.0` (1024 -> 512), `fc.3` (512 -> 256), `fc.6` (256 -> 1) of a Sequential with Dropout /
  ReLU between — our SyncHead's `fc_in`, `mlp.1`, `mlp.3`.

`asva_key_map` is that renaming (tested to be complete and one-to-one against a state dict built
with their names and shapes). Their preprocessing, kept in the returned model's ClipSpec: frames
resized (short side, bicubic, antialiased) to 224 and center-cropped, normalised with CLIP's mean /
std; 12 frames at 6 fps; audio 2 s at 16 kHz -> ImageBind Kaldi fbank 128 x 204, (x + 4.268) / 9.138.
The spec says `preprocess="asva"`: clips are cut from files as their loader does (nearest decoded
frame, full-size decode, their audio path; see sync_classifier/asva_preprocess.py). Encoders average-pool
(no projection, no embedding norm); the head sees [a, v].
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .config import ClipSpec, ModelConfig

PARTS = ("audio_encoder", "video_encoder", "head")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "pytorch_model.bin", "model.safetensors")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_MAP = {"fc.0.": "fc_in.", "fc.3.": "mlp.1.", "fc.6.": "mlp.3."}


def asva_spec() -> ClipSpec:
    """The authors' clip preprocessing (224 px bicubic + CLIP normalisation, 128 x 204 fbank)."""
    return ClipSpec(image_size=224, n_mels=128, video_mean=CLIP_MEAN, video_std=CLIP_STD, resize="bicubic",
                    preprocess="asva")


def to_ours(part: str, key: str) -> str:
    """Their `part/key` -> our state-dict key."""
    if part == "head":
        for src, dst in HEAD_MAP.items():
            if key.startswith(src):
                return "head." + dst + key[len(src):]
        raise KeyError(f"unexpected head parameter {key!r} (expected fc.0 / fc.3 / fc.6)")
    return f"{part}.{key}"


def asva_key_map(theirs: dict[str, dict]) -> dict[tuple[str, str], str]:
    """{(part, their key): our key} for every tensor of their three state dicts."""
    return {(part, k): to_ours(part, k) for part in PARTS for k in theirs[part]}


def find_asva_modules(path: str | Path) -> Path:
    """The folder holding audio_encoder/, video_encoder/, head/: `path` itself, `path/modules`, or
    `path/ckpts/checkpoint-*/modules` (the last one). FileNotFoundError listing what was looked for."""
    p = Path(path)
    candidates = [p, p / "modules"] + sorted(p.glob("ckpts/checkpoint-*/modules"), key=lambda q: int(re.sub(r"\D", "", q.parent.name) or 0))[::-1]
    for c in candidates:
        if all((c / part).is_dir() for part in PARTS):
            return c
    raise FileNotFoundError(
        f"{str(path)!r} is not a sync classifier checkpoint: no config.json + model.safetensors, and no "
        f"audio_encoder/, video_encoder/, head/ subfolders (the authors' released `modules` layout)")


def read_part(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of one part folder (safetensors or torch pickle)."""
    for name in WEIGHT_FILES:
        f = folder / name
        if f.is_file():
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(f), device="cpu")
            state = torch.load(str(f), map_location="cpu", weights_only=True)
            return state.get("state_dict", state) if isinstance(state, dict) else state
    raise FileNotFoundError(f"no weights in {str(folder)!r} (looked for {', '.join(WEIGHT_FILES)})")


def config_from_shapes(theirs: dict[str, dict]) -> ModelConfig:
    """A ModelConfig matching the tensors (channels, blocks per stage, head sizes); time stride 2 and
    average pooling as in their code; their preprocessing in the spec."""
    a, v, h = theirs["audio_encoder"], theirs["video_encoder"], theirs["head"]
    try:
        audio_channels = tuple(int(a[f"block{i}.conv1.weight"].shape[0]) for i in range(1, 5))
        video_channels = tuple(int(v[f"conv{i}x.0.spt_conv1.weight"].shape[0]) for i in range(2, 6))
        blocks = len({k.split(".")[1] for k in v if k.startswith("conv2x.")})
        fc0, fc3 = h["fc.0.weight"], h["fc.3.weight"]
    except KeyError as e:
        raise ValueError(f"not the authors' sync classifier: missing parameter {e}") from None
    embed = int(fc0.shape[1]) // 2
    return ModelConfig(spec=asva_spec(), video_channels=video_channels, audio_channels=audio_channels,
                       video_time_stride=2, video_blocks=blocks, embed_dim=embed,
                       head_dims=(int(fc0.shape[0]), int(fc3.shape[0])), temporal_pool="mean", head_fusion="concat",
                       embed_norm=False)


def read_asva(modules: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The authors' `modules` folder as (our ModelConfig, their tensors under our names); the model itself
    is built and checked by `SyncClassifier.from_pretrained` (every tensor mapped, none left over, shapes)."""
    modules = Path(modules)
    theirs = {}
    for part in PARTS:
        cfg_file = modules / part / "config.json"
        if cfg_file.is_file():
            cls = json.loads(cfg_file.read_text()).get("_class_name")
            expected = {"audio_encoder": "AudioConv2DNet", "video_encoder": "VideoR2Plus1DNet", "head": "FCHead"}[part]
            if cls is not None and cls != expected:
                raise ValueError(f"{cfg_file}: _class_name {cls!r}, expected {expected!r}")
        theirs[part] = read_part(modules / part)
    state = {our_key: theirs[part][k] for (part, k), our_key in asva_key_map(theirs).items()}
    return config_from_shapes(theirs), state


__all__ = ["PARTS", "asva_spec", "asva_key_map", "to_ours", "find_asva_modules", "read_part", "config_from_shapes", "read_asva"]
