"""Shapes, model sizes and training settings of the sync classifier (AVSync15 supplement, Sec. 1).

Everything derived from durations and rates lives in `ClipSpec`; presets are plain dataclass
instances (`paper`, `small`, `tiny`), never code executed from a config file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class ClipSpec:
    """One audio/video clip as the classifier sees it."""

    fps: float = 6.0
    num_frames: int = 12
    duration: float = 2.0
    audio_rate: int = 16000
    image_size: int = 224
    """Frames are resized (short side) and center-cropped to image_size x image_size."""
    n_mels: int = 128
    """ImageBind-style Kaldi fbank: 128 mel bins, 25 ms Hann window, 10 ms hop, padded to mel_frames."""
    mel_frames: int = 204
    mel_mean: float = -4.268
    mel_std: float = 9.138
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * self.audio_rate))


@dataclass
class ModelConfig:
    spec: ClipSpec = field(default_factory=ClipSpec)
    video_channels: tuple[int, ...] = (64, 128, 256, 512)
    """R(2+1)D blocks conv2x..conv5x (stem has video_channels[0])."""
    audio_channels: tuple[int, ...] = (64, 128, 256, 512)
    """2-D conv blocks block1..block4 (stem has audio_channels[0])."""
    video_time_stride: int = 2
    """Temporal stride of conv3x..conv5x (Table 1: 2, so 12 frames -> 2). The small/tiny presets use 1 to
    keep the 12 time steps to the end (cheap at their 32 px, and much easier to learn from scratch)."""
    video_blocks: int = 2
    """R(2+1)D residual units per stage (2 = R(2+1)D-18 shape)."""
    embed_dim: int = 512
    head_dims: tuple[int, ...] = (512, 256)
    temporal_pool: str = "mean"
    """"mean": global average pool (Table 1). "keep": average over space/frequency only and project the
    flattened time axis to embed_dim with a linear layer (keeps event timing explicit; used by the
    small/tiny CPU presets, see docs/sync_classifier.md)."""

    head_fusion: str = "concat"
    """"concat": the head sees [a, v] (Table 1). "concat_product": it sees [a, v, a * v]; the
    elementwise product gives the MLP a first-order path to audio-video agreement (small/tiny presets:
    from scratch, the plain concat head stayed at chance loss for 300+ steps in every CPU run)."""
    embed_norm: bool = False
    """BatchNorm1d (no affine) on each encoder's output before the head. Not in Table 1; the small/tiny
    presets use it: without it, training from scratch sat at the ln(21) saddle (embeddings dominated
    by a clip-independent component, so the head is locally additive and the InfoNCE gradient vanishes)."""

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        spec = ClipSpec(**d.pop("spec", {}))
        for k in ("video_channels", "audio_channels", "head_dims"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(spec=spec, **d)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    preset: str = "paper"
    num_offsets: int = 21
    offset_step: float = 0.2
    """Training clips at offsets -2.0..+2.0 s (0.2 s steps)."""
    temperature: float = 0.1
    warmup_easy_steps: int = 0
    """Optional stage 1 (supplement Sec. 1.2): for the first N steps every clip of the batch is a
    candidate (negatives from other instances too); afterwards only the instance's shifted clips."""
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.01
    steps: int = 40000
    max_minutes: float = 0.0
    """Stop (and save) after this much training wall time in total over resumes; 0 = no limit."""
    flip: bool = True
    synthetic_fps: float = 24.0
    """Frame rate of the synthetic source videos (the classifier samples them at spec.fps)."""
    families: tuple[str, ...] = ("motion", "contact", "deform", "appearance", "camera", "multi")
    """Look families of the synthetic videos (sync_classifier/families.py), drawn in turn; "flash" is the
    first generator (every event object lights up), not in the default mix."""
    real_media: str = ""
    """Folder of real media (a long video used as moving backgrounds, a speech .wav cut into event
    sounds, drums/*.ogg one-shots) mixed into the synthetic videos; empty = synthetic looks and the
    shipped drums only."""
    seed: int = 0
    num_workers: int = 1
    threads: int = 0
    """torch intra-op threads for the training process; 0 = leave torch's default. On a shared,
    oversubscribed CPU 1 thread (and num_workers=0) was 2-7x faster per step than 2 threads + a worker."""
    log_every: int = 10
    save_every: int = 100
    eval_every: int = 0
    eval_videos: int = 16
    device: str = "cpu"

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        model = ModelConfig.from_dict(d.pop("model", {}))
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training config keys: {sorted(unknown)}")
        return cls(model=model, **d)

    def to_dict(self) -> dict:
        return asdict(self)


def paper() -> TrainConfig:
    """Table 1 sizes, 224 px, batch 32, lr 2e-4 constant, 40k iterations."""
    return TrainConfig(preset="paper")


def small() -> TrainConfig:
    """CPU-trainable: 32 px frames, 64 mel bins, channels (12, 24, 48, 96), explicit time axis before
    the head, batch 4, lr 1e-3, stops after 30 minutes of training."""
    spec = ClipSpec(image_size=32, n_mels=64)
    model = ModelConfig(
        spec=spec,
        video_channels=(12, 24, 48, 96),
        audio_channels=(12, 24, 48, 96),
        video_time_stride=1,
        embed_norm=True,
        head_fusion="concat_product",
        embed_dim=128,
        head_dims=(128, 64),
        temporal_pool="keep",
    )
    return TrainConfig(
        model=model, preset="small", batch_size=4, lr=1e-3, steps=100000, max_minutes=30.0,
        num_workers=0, threads=1, log_every=10, save_every=50, eval_every=0,
    )


def tiny() -> TrainConfig:
    """For tests: 32 px, 32 mel bins, a few channels, one residual unit per stage."""
    spec = ClipSpec(image_size=32, n_mels=32)
    model = ModelConfig(
        spec=spec,
        video_channels=(4, 8, 8, 16),
        audio_channels=(4, 8, 8, 16),
        video_blocks=1,
        video_time_stride=1,
        embed_norm=True,
        head_fusion="concat_product",
        embed_dim=16,
        head_dims=(16, 8),
        temporal_pool="keep",
    )
    return TrainConfig(model=model, preset="tiny", batch_size=2, lr=1e-3, steps=20, log_every=1, save_every=10)


PRESETS = {"paper": paper, "small": small, "tiny": tiny}


def load_config_file(path: str | Path) -> dict:
    """A training config file (.json or .yaml): a (partial) TrainConfig as a nested mapping."""
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def merge(base: TrainConfig, overrides: dict) -> TrainConfig:
    """base with a nested dict of overrides applied (model/spec sub-dicts merge key by key)."""
    d = base.to_dict()
    for k, v in overrides.items():
        if k == "model" and isinstance(v, dict):
            for mk, mv in v.items():
                if mk == "spec" and isinstance(mv, dict):
                    d["model"]["spec"].update(mv)
                else:
                    d["model"][mk] = mv
        else:
            d[k] = v
    return TrainConfig.from_dict(d)


__all__ = ["ClipSpec", "ModelConfig", "TrainConfig", "PRESETS", "paper", "small", "tiny", "merge", "load_config_file"]
