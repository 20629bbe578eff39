"""open_clip adapter: resolve CLIP weights (open_clip tag, Hugging Face hub id, local file), build the
model once, and encode uint8 frames into L2-normalised image features.

`model` is an open_clip model name (`ViT-B-32`, `ViT-L-14`, ...), an `hf-hub:org/repo` id (config and
weights from the hub), or `tiny` (a small random-init test model, see `TINY_CFG`). `pretrained` is an
open_clip pretrained tag (`openai`, `laion2b_s34b_b79k`, ...; downloaded to the open_clip / Hugging Face
cache on first use), or a local checkpoint file; empty means no weights.

The activation must match the weights: OpenAI's CLIPs (and several other tags) were trained with QuickGELU,
while open_clip's plain configs (`ViT-B-32`) use GELU and the library only warns on a mismatch. So a model
name is resolved to the config its pretrained tag needs (`ViT-B-32` + `openai` -> `ViT-B-32-quickgelu`)
before building; see `resolve_model_name`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from curate.models import CLIP_MEAN, CLIP_STD, batched, image_batch

TINY_CFG = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=1, width=32, patch_size=16, head_width=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
)
"""A CLIP with the ViT-B-32 layout at toy size, random init (tests only; it has no pretrained weights)."""


@dataclass
class ClipEncoder:
    model: object
    size: int
    mean: tuple
    std: tuple
    device: str
    dtype: object

    def encode(self, frames: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """uint8 [H, W, 3] frames -> float32 [N, D] unit-norm image features."""
        import torch

        out = []
        with torch.inference_mode():
            for sl in batched(len(frames), batch_size):
                x = image_batch(frames[sl], self.size, self.mean, self.std, self.device, self.dtype)
                f = self.model.encode_image(x).float()
                out.append(torch.nn.functional.normalize(f, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def resolve_model_name(model: str, pretrained: str | None) -> tuple[str, bool]:
    """(open_clip config name, force_quick_gelu) whose activation matches the weights of `pretrained`.

    A tag that declares `quick_gelu` gets the `-quickgelu` variant of the config when open_clip has one
    (else QuickGELU is forced); a tag that declares nothing keeps the config's own activation (the one it
    was trained with, e.g. `roberta-ViT-B-32`). Local files, hub ids and `tiny` are left unchanged.
    """
    import open_clip
    from open_clip import pretrained as oc_pretrained

    if not pretrained or model == "tiny" or model.startswith("hf-hub:") or model.endswith("-quickgelu"):
        return model, False
    tag_cfg = oc_pretrained.get_pretrained_cfg(model, pretrained) or {}
    if not tag_cfg.get("quick_gelu", False):
        return model, False
    if (open_clip.get_model_config(model) or {}).get("quick_gelu", False):
        return model, False
    variant = f"{model}-quickgelu"
    if variant in open_clip.list_models():
        return variant, False
    return model, True


def weights_problem(model: str, pretrained: str | None) -> str | None:
    """None when the weights can be loaded (downloading them to the cache if needed), else why not.

    Called on the driver before any worker starts, so workers find the weights in the cache.
    """
    import open_clip
    from open_clip import pretrained as oc_pretrained

    if model.startswith("hf-hub:"):
        try:
            oc_pretrained.download_pretrained_from_hf(model[len("hf-hub:") :])
            return None
        except Exception as e:
            return f"cannot fetch {model!r} from the Hugging Face hub ({type(e).__name__}: {str(e)[:200]})"
    if not pretrained:
        return f"no pretrained weights configured for CLIP model {model!r} (pretrained is empty)"
    if os.path.isfile(pretrained):
        return None
    if model == "tiny":
        return f"checkpoint file {pretrained!r} not found (the tiny test model has no published weights)"
    if model not in open_clip.list_models():
        return f"unknown open_clip model {model!r}"
    cfg = oc_pretrained.get_pretrained_cfg(model, pretrained)
    if not cfg:
        if any(s in pretrained for s in ("/", "\\", ".")):
            return f"checkpoint file {pretrained!r} not found"
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        return f"{pretrained!r} is neither a file nor an open_clip pretrained tag of {model!r} (tags: {tags})"
    try:
        oc_pretrained.download_pretrained(cfg)
        return None
    except Exception as e:
        return f"cannot download CLIP {model}/{pretrained} ({type(e).__name__}: {str(e)[:200]})"


def load_clip(model: str, pretrained: str | None, device: str, dtype, random: bool = False) -> ClipEncoder:
    """Build the CLIP model with its weights (or random init when `random`), eval mode, on `device`."""
    import open_clip
    import torch

    if model == "tiny":
        m = open_clip.CLIP(**TINY_CFG)
        if not random:
            m.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True))
        size, mean, std = TINY_CFG["vision_cfg"]["image_size"], CLIP_MEAN, CLIP_STD
    else:
        # an hf-hub: model brings its own weights; otherwise `pretrained` is a tag or a local file
        weights = None if random or model.startswith("hf-hub:") else (pretrained or None)
        name, force_quick_gelu = resolve_model_name(model, pretrained)
        m = open_clip.create_model(name, pretrained=weights, load_weights=not random, device="cpu",
                                   force_quick_gelu=force_quick_gelu)
        pp = open_clip.get_model_preprocess_cfg(m)
        size = pp.get("size", 224)
        size = size[0] if isinstance(size, (tuple, list)) else size
        mean, std = tuple(pp.get("mean", CLIP_MEAN)), tuple(pp.get("std", CLIP_STD))
    m = m.to(device=device, dtype=dtype).eval()
    return ClipEncoder(m, int(size), mean, std, device, dtype)
