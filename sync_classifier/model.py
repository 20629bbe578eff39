"""Sync classifier network (AVSync15 supplement Table 1): R(2+1)D video encoder, 2-D conv audio
encoder, MLP head phi(a, v) on the concatenated 512 + 512 features.

Module names follow AVID-CMA's `R2Plus1D` / `Conv2D` (conv1, conv2x..conv5x with spt_conv / tmp_conv;
conv1, block1..block4) so AVID checkpoints map onto the encoders key by key (`load_avid`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .asva import find_asva_modules, read_asva
from .config import ModelConfig, model_config_error

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class R2Plus1DBlock(nn.Module):
    """Residual unit of two (2+1)-D convs (1x3x3 spatial then 3x1x1 temporal), as AVID's BasicR2P1DBlock."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.spt_conv1 = nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, stride[1], stride[2]), padding=(0, 1, 1), bias=False)
        self.spt_bn1 = nn.BatchNorm3d(cout)
        self.tmp_conv1 = nn.Conv3d(cout, cout, (3, 1, 1), stride=(stride[0], 1, 1), padding=(1, 0, 0), bias=False)
        self.tmp_bn1 = nn.BatchNorm3d(cout)
        self.spt_conv2 = nn.Conv3d(cout, cout, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.spt_bn2 = nn.BatchNorm3d(cout)
        self.tmp_conv2 = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.out_bn = nn.BatchNorm3d(cout)
        self.res_conv = (
            nn.Conv3d(cin, cout, 1, stride=stride, bias=False) if cin != cout or any(s != 1 for s in stride) else None
        )

    def forward(self, x):
        h = F.relu(self.spt_bn1(self.spt_conv1(x)))
        h = F.relu(self.tmp_bn1(self.tmp_conv1(h)))
        h = F.relu(self.spt_bn2(self.spt_conv2(h)))
        h = self.tmp_conv2(h)
        res = self.res_conv(x) if self.res_conv is not None else x
        return F.relu(self.out_bn(h + res))


class TimeProjection(nn.Module):
    """temporal_pool="aligned": features [N, C, T_in] -> [N, embed_dim * T] on the clip's T frame times.

    The time axis is resampled (linear) to the T video frames, a kernel-3 Conv1d maps C -> embed_dim at
    each time (weights shared over time), and BatchNorm (no affine, statistics shared over time) normalises.
    The output is flattened time-major per channel, [N, D, T] -> [N, D * T], which SyncHead(time_product)
    unflattens.
    """

    def __init__(self, channels: int, cfg: ModelConfig):
        super().__init__()
        self.frames = cfg.spec.num_frames
        self.conv = nn.Conv1d(channels, cfg.embed_dim, 3, padding=1)
        self.norm = nn.BatchNorm1d(cfg.embed_dim, affine=False) if cfg.embed_norm else None

    def forward(self, x):
        if x.shape[-1] != self.frames:
            x = F.interpolate(x, size=self.frames, mode="linear", align_corners=False)
        e = self.conv(x)
        return (e if self.norm is None else self.norm(e)).flatten(1)


def _check_config(cfg: ModelConfig) -> None:
    error = model_config_error(cfg)
    if error:
        raise ValueError(error)


class _PooledEncoder(nn.Module):
    """What the video and audio encoders share: features [N, C, T] (space / frequency averaged) -> the
    embedding, by `temporal_pool` ("mean", "keep": linear over the flattened time axis, "aligned")."""

    def _init_pooling(self, channels: int, steps: int, cfg: ModelConfig, name: str) -> None:
        _check_config(cfg)
        self.proj = self.aligned = self.norm = None
        if cfg.temporal_pool == "aligned":
            self.aligned = TimeProjection(channels, cfg)
            return
        self.proj = nn.Linear(channels * steps, cfg.embed_dim) if cfg.temporal_pool == "keep" else None
        if self.proj is None and channels != cfg.embed_dim:
            raise ValueError(f"temporal_pool='mean' needs {name}_channels[-1] == embed_dim")
        self.norm = nn.BatchNorm1d(cfg.embed_dim, affine=False) if cfg.embed_norm else None

    def _pool(self, h):
        if self.aligned is not None:
            return self.aligned(h)
        e = h.mean(dim=-1) if self.proj is None else self.proj(h.flatten(1))
        return e if self.norm is None else self.norm(e)


class VideoEncoder(_PooledEncoder):
    """[N, 3, T, H, W] -> [N, embed_dim]. Paper: 3x12x224x224 -> 64x12x56x56 -> ... -> 512x2x7x7 -> 512."""

    channels_last_on_cpu: bool = True
    """Run the convolutions on channels-last (NDHWC) tensors on CPU: the same result, and the small
    preset's forward + backward took 0.65-0.74x the time of the contiguous layout on the 2-core machine
    (`bench/sync_train_step.py` measures both)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.video_channels
        self.with_diff = cfg.video_input == "rgb_diff"
        self.conv1 = nn.Sequential(
            nn.Conv3d(6 if self.with_diff else 3, c[0], (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(c[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        stages, cin = [], c[0]
        for i, cout in enumerate(c):
            ts = cfg.video_time_stride
            space = 1 if i == 3 and cfg.video_cells > 1 else 2  # places: conv5x keeps conv4x's map size
            stride = (1, 1, 1) if i == 0 else (ts, space, space)
            units = [R2Plus1DBlock(cin, cout, stride)] + [R2Plus1DBlock(cout, cout) for _ in range(cfg.video_blocks - 1)]
            stages.append(nn.Sequential(*units))
            cin = cout
        self.conv2x, self.conv3x, self.conv4x, self.conv5x = stages
        t = cfg.spec.num_frames
        for _ in range(3):
            t = (t - 1) // cfg.video_time_stride + 1
        self._init_pooling(c[-1], t, cfg, "video")
        self.cells = cfg.video_cells

    def features(self, x) -> list[torch.Tensor]:
        if self.with_diff:
            x = torch.cat([x, F.pad(x[:, :, 1:] - x[:, :, :-1], (0, 0, 0, 0, 1, 0))], dim=1)
        if self.channels_last_on_cpu and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        outs = [self.conv1(x)]
        for stage in (self.conv2x, self.conv3x, self.conv4x, self.conv5x):
            outs.append(stage(outs[-1]))
        return outs

    def forward(self, x):
        h = self.features(x)[-1]
        if self.cells == 1:
            return self._pool(h.mean(dim=(3, 4)))
        n, c, t = h.shape[:3]
        h = F.adaptive_avg_pool3d(h, (t, self.cells, self.cells)).flatten(3)  # [N, C, T, places]
        e = self._pool(h.permute(0, 3, 1, 2).reshape(-1, c, t))  # every place through the same projection
        return e.reshape(n, -1)


class AudioBlock(nn.Module):
    """Two 3x3 convs (first with the stride), BN + ReLU after each, as AVID's Basic2DBlock."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class AudioEncoder(_PooledEncoder):
    """[N, 1, n_mels, frames] -> [N, embed_dim]. Paper: 1x128x204 -> 64x64x102 -> ... -> 512x8x13 -> 512."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.audio_channels
        self.conv1 = nn.Sequential(nn.Conv2d(1, c[0], 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True))
        self.block1 = AudioBlock(c[0], c[0], 2)
        self.block2 = AudioBlock(c[0], c[1], 2)
        self.block3 = AudioBlock(c[1], c[2], 2)
        self.block4 = AudioBlock(c[2], c[3], 1)
        t = cfg.spec.mel_frames
        for _ in range(4):
            t = (t - 1) // 2 + 1
        self._init_pooling(c[-1], t, cfg, "audio")

    def features(self, x) -> list[torch.Tensor]:
        outs = [self.conv1(x)]
        for blk in (self.block1, self.block2, self.block3, self.block4):
            outs.append(blk(outs[-1]))
        return outs

    def forward(self, x):
        return self._pool(self.features(x)[-1].mean(dim=2))


class SyncHead(nn.Module):
    """MLP on concat(audio, video): 2*embed -> head_dims... -> 1 (paper 1024 -> 512 -> 256 -> 1).

    The first layer is one Linear on the concatenation; `pairwise` splits its weight into the audio and
    video halves so all K x K pairs cost one projection per clip plus a broadcast add. With
    head_fusion="concat_product" the input is [a, v, a * v] (3*embed). With head_fusion="time_product"
    (after temporal_pool="aligned" encoders: embeddings [D, T] flattened) audio and video features are
    multiplied *at each frame time*; fc_in + ReLU run on each time's product (weights shared over time),
    the result is averaged over time and the rest of the MLP gives phi: only features that coincide in
    time score, wherever in the clip they are. With video_cells > 1 the video embedding holds one
    embedding per place; the MLP scores the audio against each place and phi is the log-mean-exp of those.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.product = cfg.head_fusion == "concat_product"
        _check_config(cfg)
        self.time_product = cfg.head_fusion == "time_product"
        self.frames = cfg.spec.num_frames
        dims = [(1 if self.time_product else 3 if self.product else 2) * cfg.embed_dim, *cfg.head_dims]
        self.embed_dim = cfg.embed_dim
        self.places = cfg.video_cells**2
        self.fc_in = nn.Linear(dims[0], dims[1])
        rest = []
        for a, b in zip(dims[1:-1], dims[2:]):
            rest += [nn.ReLU(inplace=True), nn.Linear(a, b)]
        rest += [nn.ReLU(inplace=True), nn.Linear(dims[-1], 1)]
        self.mlp = nn.Sequential(*rest)

    def _time_product(self, p):
        """p = a * v flattened [..., D * T] -> phi [...]."""
        p = p.unflatten(-1, (self.embed_dim, self.frames)).transpose(-1, -2)  # [..., T, D]
        h = F.relu(self.fc_in(p)).mean(dim=-2)
        return self.mlp[1:](h).squeeze(-1)  # mlp[0] is the ReLU, applied above before the mean

    def _over_places(self, phi):
        """phi [..., places] -> [...]: log-mean-exp over the video's places (a soft maximum)."""
        if self.places == 1:
            return phi.squeeze(-1)
        return torch.logsumexp(phi, dim=-1) - math.log(self.places)

    def forward(self, a, v):
        """Paired scores: a [..., D], v [..., places * D] -> phi [...]."""
        if self.time_product:
            return self._time_product(a * v)
        v = v.unflatten(-1, (self.places, self.embed_dim))
        a = a.unsqueeze(-2).expand_as(v)
        x = [a, v, a * v] if self.product else [a, v]
        return self._over_places(self.mlp(self.fc_in(torch.cat(x, dim=-1))).squeeze(-1))

    def pairwise(self, a, v):
        """All pairs: a [B, Ka, D], v [B, Kv, places * D] -> phi [B, Ka, Kv] (phi[b, i, j] = phi(a_i, v_j))."""
        if self.time_product:
            return self._time_product(a.unsqueeze(-2) * v.unsqueeze(-3))
        d = self.embed_dim
        v = v.unflatten(-1, (self.places, d))  # [B, Kv, places, D]
        w_a, w_v = self.fc_in.weight[:, :d], self.fc_in.weight[:, d : 2 * d]
        ha = (a @ w_a.T)[:, :, None, None]  # [B, Ka, 1, 1, H]
        hv = (v @ w_v.T + self.fc_in.bias)[:, None]  # [B, 1, Kv, places, H]
        h = ha + hv
        if self.product:
            h = h + (a[:, :, None, None] * v[:, None]) @ self.fc_in.weight[:, 2 * d :].T
        return self._over_places(self.mlp(h).squeeze(-1))


class SyncClassifier(nn.Module):
    training_data: str = "unknown"
    """What the weights were trained on ("synthetic", "vggss", ...), saved as config.json's
    `training_data`; "unknown" when a checkpoint does not say."""

    def __init__(self, config: ModelConfig | None = None, training_data: str = "unknown"):
        super().__init__()
        self.training_data = training_data
        self.config = config or ModelConfig()
        self.video_encoder = VideoEncoder(self.config)
        self.audio_encoder = AudioEncoder(self.config)
        self.head = SyncHead(self.config)

    @property
    def spec(self):
        return self.config.spec

    def encode_audio(self, mel):
        """mel [N, 1, n_mels, mel_frames] (see audio.log_mel) -> [N, D]."""
        return self.audio_encoder(mel)

    def encode_video(self, video):
        """video float [N, 3, T, S, S] (see frames.video_to_tensor) -> [N, D]."""
        return self.video_encoder(video)

    def forward(self, mel, video):
        """Paired phi: mel [N, 1, F, T], video [N, 3, T, S, S] -> [N]."""
        return self.head(self.encode_audio(mel), self.encode_video(video))

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = {**self.config.to_dict(), "training_data": self.training_data}
        (path / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = path / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp))
        tmp.replace(path / WEIGHTS_NAME)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu") -> "SyncClassifier":
        """Load a checkpoint folder (or any file inside it): this project's config.json +
        model.safetensors, or the authors' released layout (`modules/` with audio_encoder/,
        video_encoder/, head/; see sync_classifier/asva.py). FileNotFoundError says what is missing."""
        from safetensors.torch import load_file

        folder = checkpoint_folder(path)
        if (folder / WEIGHTS_NAME).is_file():
            raw = json.loads((folder / CONFIG_NAME).read_text())
            model = cls(ModelConfig.from_dict(raw), training_data=str(raw.get("training_data", "unknown")))
            model.load_state_dict(load_file(str(folder / WEIGHTS_NAME), device="cpu"))
            return model.to(device).eval()
        return cls.from_asva(find_asva_modules(folder)).to(device).eval()

    @classmethod
    def from_asva(cls, modules: str | Path, training_data: str = "vggss") -> "SyncClassifier":
        """The authors' released `modules` folder (see sync_classifier/asva.py): every tensor mapped onto
        ours, none left over, shapes checked; `training_data` "vggss" (what their classifier was trained on)."""
        config, theirs = read_asva(modules)
        model = cls(config, training_data=training_data)
        ours = model.state_dict()
        for key, t in theirs.items():
            if key not in ours:
                raise ValueError(f"{key}: no matching parameter in the model")
            if tuple(t.shape) != tuple(ours[key].shape):
                raise ValueError(f"{key}: shape {tuple(t.shape)} != {tuple(ours[key].shape)}")
        missing = sorted(set(ours) - set(theirs))
        if missing:
            raise ValueError(f"the authors' checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
        model.load_state_dict(theirs, strict=True)
        return model.eval()


def checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint folder named by `path` (the folder itself or a file inside it)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    folder = p.parent if p.is_file() else p
    if (folder / WEIGHTS_NAME).is_file() and not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} has {WEIGHTS_NAME} but no {CONFIG_NAME}")
    if p.is_file() and folder.name in ("audio_encoder", "video_encoder", "head"):
        folder = folder.parent  # a file of the authors' layout: modules/<part>/<file>
    return folder


def load_avid(model: SyncClassifier, path: str | Path) -> dict:
    """Copy AVID-CMA encoder weights into model where names and shapes match.

    Accepts AVID-CMA checkpoints ({'model': state} with keys like 'module.video_model.conv2x.0.spt_conv1.weight'
    and 'module.audio_model.block1.conv1.weight') or a bare state dict with those keys (with or without
    'module.'). AVID's res_conv / conv names equal ours. Returns {'loaded', 'missing', 'unexpected', 'mismatched'}
    lists of our / their key names.
    """
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    if isinstance(ckpt, dict):
        for k in ("model", "state_dict", "model_state_dict"):
            if k in ckpt and isinstance(ckpt[k], dict):
                ckpt = ckpt[k]
                break
    prefixes = {"video_model.": "video_encoder.", "audio_model.": "audio_encoder.", "video_encoder.": "video_encoder.", "audio_encoder.": "audio_encoder."}
    ours = model.state_dict()
    mapped, unexpected, mismatched = {}, [], []
    for key, value in ckpt.items():
        k = key[len("module."):] if key.startswith("module.") else key
        target = None
        for src, dst in prefixes.items():
            if k.startswith(src):
                target = dst + k[len(src):]
                break
        if target is None or target not in ours:
            unexpected.append(key)
        elif tuple(ours[target].shape) != tuple(value.shape):
            mismatched.append(target)
        else:
            mapped[target] = value
    with torch.no_grad():
        for k, v in mapped.items():
            ours[k].copy_(v)
    enc_keys = [k for k in ours if k.startswith(("video_encoder.", "audio_encoder."))]
    missing = [k for k in enc_keys if k not in mapped]
    return {"loaded": sorted(mapped), "missing": missing, "unexpected": unexpected, "mismatched": mismatched}
