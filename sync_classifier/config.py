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
    video_mean: tuple[float, ...] = (0.43216, 0.394666, 0.37645)
    """Per-channel mean of [0, 1] RGB frames (default Kinetics, as AVID; the authors' released VGGSS
    classifier uses CLIP's (0.48145466, 0.4578275, 0.40821073))."""
    video_std: tuple[float, ...] = (0.22803, 0.22145, 0.216989)
    """Per-channel std (Kinetics; the authors' classifier: CLIP's (0.26862954, 0.26130258, 0.27577711))."""
    resize: str = "bilinear"
    """Interpolation of the short-side resize: "bilinear" or "bicubic" (the authors' code), antialiased."""
    preprocess: str = "native"
    """How clips are cut from a file: "native" (this project's decode to image_size, frame on screen,
    mono 16 kHz) or "asva" (the authors' code: full-size decode, nearest frame, bicubic in float, their
    audio path; sync_classifier/asva_preprocess.py). Checkpoints in the authors' layout load as "asva"."""

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * self.audio_rate))


MODEL_CHOICES = {
    "video_input": ("rgb", "rgb_diff"),
    "temporal_pool": ("mean", "keep", "aligned"),
    "head_fusion": ("concat", "concat_product", "time_product"),
}
"""The allowed values of ModelConfig's choice settings (checked by the model and by the training CLI)."""


def model_config_error(cfg: "ModelConfig") -> str | None:
    """What is wrong with cfg's choice settings (one line, "model.<key>=..." as the CLI names them), or None."""
    for key, allowed in MODEL_CHOICES.items():
        value = getattr(cfg, key)
        if value not in allowed:
            return f"model.{key}={value!r}: expected {', '.join(allowed[:-1])} or {allowed[-1]}"
    if not isinstance(cfg.video_cells, int) or cfg.video_cells < 1:
        return f"model.video_cells={cfg.video_cells!r}: expected an integer >= 1"
    if cfg.video_cells > 1 and cfg.temporal_pool == "aligned":
        return f"model.video_cells={cfg.video_cells} needs model.temporal_pool 'mean' or 'keep', not 'aligned'"
    if (cfg.temporal_pool == "aligned") != (cfg.head_fusion == "time_product"):
        return (f"model.temporal_pool={cfg.temporal_pool!r} with model.head_fusion={cfg.head_fusion!r}: "
                "temporal_pool=aligned and head_fusion=time_product go together")
    return None


CHECKPOINT_KEYS = ("training_data",)
"""config.json entries about the checkpoint, not the network (see SyncClassifier.training_data)."""


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
    small/tiny CPU presets, see docs/sync_classifier.md). "aligned": average over space/frequency, resample
    the time axis to the num_frames frame times, a kernel-3 Conv1d to embed_dim at each time (shared over
    time); the embedding is [embed_dim, num_frames] flattened. Needs head_fusion="time_product"."""

    head_fusion: str = "concat"
    """"concat": the head sees [a, v] (Table 1). "concat_product": it sees [a, v, a * v]; the
    elementwise product gives the MLP a first-order path to audio-video agreement (small/tiny presets:
    from scratch, the plain concat head stayed at chance loss for 300+ steps in every CPU run).
    "time_product" (with temporal_pool="aligned"): audio and video features multiplied at each frame
    time, the first layer + ReLU applied per time (shared weights), averaged over time, then the rest of
    the MLP: phi scores features that coincide in time, wherever in the clip (see SyncHead)."""
    video_input: str = "rgb"
    """"rgb": the normalised frames (Table 1). "rgb_diff": the frames plus their difference to the previous
    frame (6 input channels; the first frame's difference is 0), so that *when* something changes is in the
    input whatever the thing looks like. Not in Table 1 and not a preset's default: measured for the small
    preset in docs/sync_classifier.md. It changes the stem's shape, so AVID / ASVA weights need "rgb"."""
    video_cells: int = 1
    """The video's last feature map is average-pooled to video_cells x video_cells places (1: over the whole
    picture, Table 1); each place is embedded by the same time projection (the embedding is the places'
    embeddings concatenated, [cells^2 * embed_dim]) and phi is the log-mean-exp over places of the head's
    score at each place, so the thing that sounds is scored where it is and motion elsewhere in the picture
    does not dilute it. With video_cells > 1, conv5x has spatial stride 1 (the small preset's 32 px frames
    end at 2 x 2 instead of 1 x 1; same weights, more compute). Not in Table 1 and not a preset's default:
    measured in docs/sync_classifier.md. Needs temporal_pool "mean" or "keep"."""
    embed_norm: bool = False
    """BatchNorm1d (no affine) on each encoder's output before the head. Not in Table 1; the small/tiny
    presets use it: without it, training from scratch sat at the ln(21) saddle (embeddings dominated
    by a clip-independent component, so the head is locally additive and the InfoNCE gradient vanishes)."""

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """From a config.json mapping; entries that describe the checkpoint rather than the network
        (`training_data`, keys starting with "_") are ignored, anything else unknown is an error."""
        from common.config import build

        d = {k: v for k, v in d.items() if k not in CHECKPOINT_KEYS and not k.startswith("_")}
        return build(cls, d)

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
    stage1_steps: int = 0
    """Stage 1 (supplement Sec. 1.2): the first N steps use easy negatives only (for each clip the
    candidates are its true partner and the clips of the *other* instances of the batch, never the
    instance's own shifted clips). Afterwards stage 2: hard negatives only (the instance's shifted
    clips). The two kinds are never in one softmax (the supplement reports that diverges). An AVID-CMA
    init (--init-avid) replaces stage 1: with it, stage1_steps must be 0."""
    batch_size: int = 32
    lr: float = 2e-4
    warmup_steps: int = 0
    """Linear LR warm-up from 0 over the first N steps (the authors' config: 100), then `lr_schedule`."""
    lr_schedule: str = "constant"
    """After the warm-up: "constant" (the authors' config) or "cosine" (half-cosine decay to 0 at `steps`,
    for runs of a fixed number of steps; a max_minutes stop cuts the decay short)."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value (the authors' config: 1.0); 0 = off."""
    mixed_precision: str = ""
    """"no", "fp16" or "bf16": autocast of the forward pass (GPU only; fp16 uses a grad scaler); "" (default):
    `accelerate launch --mixed_precision`, else bf16 on a GPU."""
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
    keep_last: int = 3
    """Checkpoint folders kept (the newest N; 0: all)."""
    trackers: str = "tensorboard"
    """Trackers through accelerate, comma-separated: tensorboard, wandb, none."""
    eval_every: int = 0
    eval_videos: int = 16
    device: str = "cpu"
    """"cpu", "cuda", "cuda:1", ...; under `accelerate launch` each process takes its own GPU."""
    shuffle_buffer: int = 8
    """Folder/shard sources: instances are mixed in a buffer of this many before batching."""

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A saved or hand-written (partial) mapping, every value checked by its declared type."""
        from common.config import build

        d = dict(d)
        if "warmup_easy_steps" in d:  # name before stage1_steps
            d["stage1_steps"] = d.pop("warmup_easy_steps")
        return build(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)


def paper() -> TrainConfig:
    """Table 1 sizes, 224 px, batch 32, lr 2e-4 (100 warm-up steps, then constant), gradient norm
    clipped to 1.0, 40k stage-2 iterations (the authors' config); fp16 autocast on GPU. Stage 1 (easy
    negatives) is off: use --init-avid (the paper's choice) or set stage1_steps."""
    return TrainConfig(preset="paper", warmup_steps=100, grad_clip=1.0, mixed_precision="fp16", num_workers=4)


def small() -> TrainConfig:
    """CPU-trainable: 32 px frames, 64 mel bins, channels (12, 24, 48, 96), explicit time axis before
    the head, batch 4, lr 1e-3, stage 2 only, one DataLoader worker (synthesis overlaps the step), stops
    after 30 minutes of training. Data: every other video is the first generator ("flash", which a model
    learns from scratch in a few hundred steps), the others cycle through the six look families. The
    frame-difference input (`model.video_input=rgb_diff`) and `lr_schedule=cosine` are measured against
    this recipe in docs/sync_classifier.md; they are not the default (worse on dubbed real footage)."""
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
        families=("flash", "motion", "flash", "contact", "flash", "deform", "flash", "appearance", "flash", "camera",
                  "flash", "multi"),
        num_workers=1, threads=1, log_every=10, save_every=50, eval_every=0,
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


__all__ = ["ClipSpec", "ModelConfig", "MODEL_CHOICES", "model_config_error", "TrainConfig", "PRESETS", "paper", "small", "tiny", "merge", "load_config_file"]
