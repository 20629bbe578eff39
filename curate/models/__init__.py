"""Adapters that load the pretrained models used by the model-backed curation filters.

One small module per model family (`clip`, `imagebind`); the filters in `curate.filters` import only
these adapters, so a package's quirks (import side effects, preprocessing, weight locations) live in
one place. Shared here: device / dtype resolution and the default actor resources of a model stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from curate.stage import Resources, Stage, StageUnavailable

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible to this process, else 'cpu'; anything else unchanged."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    """Name -> torch dtype. Half precision on CPU is slow or unsupported, so it falls back to float32."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if device.startswith("cpu") and dtype != "float32":
        log.warning("dtype %s on CPU: using float32", dtype)
        return torch.float32
    return getattr(torch, dtype)


def model_resources():
    """Default actor resources of a model stage: a fraction of a CPU (so a 2-CPU machine cannot deadlock
    an actor pool against the decode tasks) and a quarter of a GPU when GPUs exist (4 actors share one)."""
    try:
        import torch

        gpus = 0.25 if torch.cuda.is_available() else 0.0
    except Exception:  # torch missing: the stage's check() reports it
        gpus = 0.0
    return Resources(num_cpus=0.5, num_gpus=gpus)


def batched(n: int, size: int):
    """Slices covering range(n) in chunks of `size`."""
    size = max(1, int(size))
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


# ------------------------------------------------------------------------------------ image input

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def image_batch(frames, size: int, mean=CLIP_MEAN, std=CLIP_STD, device: str = "cpu", dtype=None):
    """uint8 RGB frames (a list of [H, W, 3] arrays, shapes may differ) -> normalised [N, 3, size, size].

    The torchvision CLIP transform done on a batch: bicubic resize of the short side to `size` (with
    antialiasing, as PIL), center crop, scale to [0, 1], normalise. Runs on `device` (GPU when there).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    out, i = [], 0
    frames = list(frames)
    while i < len(frames):  # group runs of equal shape (frames of one video) into one tensor op
        j = i + 1
        while j < len(frames) and frames[j].shape == frames[i].shape:
            j += 1
        x = torch.from_numpy(np.ascontiguousarray(np.stack(frames[i:j]))).to(device)
        x = x.permute(0, 3, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        s = size / min(h, w)
        nh, nw = max(size, int(round(h * s))), max(size, int(round(w * s)))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
        top, left = (nh - size) // 2, (nw - size) // 2
        out.append(x[:, :, top : top + size, left : left + size])
        i = j
    x = torch.cat(out) if out else torch.zeros(0, 3, size, size, device=device)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    sd = torch.tensor(std, device=device).view(1, 3, 1, 1)
    x = (x - m) / sd
    return x.to(dtype) if dtype is not None else x


# ------------------------------------------------------------------------------------ model stages


@dataclass
class ModelStage(Stage):
    """A stage backed by a pretrained model: weights resolved on the driver in `check()` (fail fast,
    or fall back to random init when explicitly allowed), model built once per worker in `setup()`.

    Subclasses implement `_weights_problem()` (None when weights are available, else what is wrong),
    `_provide_hint()` (what the user must provide) and `_load(random: bool)`.
    """

    needs_model = True
    resources: Resources = field(default_factory=model_resources)

    def check(self) -> None:
        super().check()
        self._resolve_weights()

    def _resolve_weights(self) -> None:
        if self.random_weights:
            return
        problem = self._weights_problem()
        if problem is None:
            return
        if getattr(self, "allow_random_weights", False):
            log.warning(
                "stage '%s': %s; running with RANDOM weights (--allow-random-weights): its scores %s are not meaningful",
                self.name, problem, ", ".join(self.columns),
            )
            self.random_weights = True
            return
        raise StageUnavailable(
            f"stage '{self.name}' has no model weights: {problem}. Provide {self._provide_hint()}; "
            f"or pass --allow-random-weights (stage param allow_random_weights=true) for a smoke test "
            f"(its scores {', '.join(self.columns)} are then not meaningful)."
        )

    def setup(self) -> None:
        self._resolve_weights()
        self._device = resolve_device(getattr(self, "device", "auto"))
        self._dtype = resolve_dtype(getattr(self, "dtype", "float32"), self._device)
        self._load(random=self.random_weights)

    def __getstate__(self):
        # a stage travels to workers before setup(); never ship a loaded model with it
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def _weights_problem(self) -> str | None:
        raise NotImplementedError

    def _provide_hint(self) -> str:
        raise NotImplementedError

    def _load(self, random: bool) -> None:
        raise NotImplementedError

