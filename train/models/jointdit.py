"""JointDiT (Wang et al., "Animate and Sound an Image", CVPR 2025): one self-contained model file.

Two pretrained denoisers -- SVD img2vid (`UNetSpatioTemporalConditionModel`, EDM, v-prediction) and
AudioLDM2 (`AudioLDM2UNet2DConditionModel`, DDPM, epsilon) -- are cut into layers (one UNet block =
one layer), the layers are matched to JointDiT blocks with the supplement's formula, and every Joint
block appends a Perceiver Joint Attention layer over [video tokens, audio tokens] and modality-specific
feed-forward layers, each wrapped in modality-specific AdaLN.

Layer counting (see docs/jointdit.md):
- AudioLDM2: 4 down blocks + mid block + 4 up blocks = 9 layers.
- SVD: the same 9 diffusers blocks, but the mid block is counted together with the first up block
  (`UpBlockSpatioTemporal`, the one without attention at the bottom resolution) as one layer, giving
  the paper's N_video = 8. Layer 5 is then "mid + up0" for SVD and "mid" for AudioLDM2, so with any B
  both experts' bottleneck stays in the Output block.

The network here is the raw denoiser F_theta of each expert: video input is SVD's 8-channel input
(c_in-scaled noisy latent concatenated with the image latent), video timestep is EDM's c_noise; audio
input is the noisy latent and its timestep the DDPM index. Preconditioning, losses and samplers live
in `train/diffusion.py`.

Options (recorded in the config): `use_joint_blocks=False` and `joint_attention="vanilla"` are the
paper's two architecture ablations; `cmc_pe=True` adds the sounding-video baseline's cross-modal
conditioning as positional encoding (Hayakawa et al.) in each Joint block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin, UNetSpatioTemporalConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel

ATTENTION_MODES = ("full", "block_diagonal", "skip")
"""full: Perceiver Joint Attention over [video, audio]; block_diagonal: each modality attends only to
itself (JointCFG's negative branch); skip: the full-attention layers are removed (JointCFG*)."""

JOINT_ATTENTIONS = ("perceiver", "vanilla")
"""perceiver: Perceiver Joint Attention (the paper's design); vanilla: the paper's "w/o Perceiver attn" ablation
(both modalities projected to one width, standard self-attention with shared Q/K/V over the concatenation)."""

OPTION_KEYS = ("use_joint_blocks", "joint_attention", "cmc_pe")
"""Architecture switches recorded in the JointDiT config (saved with every checkpoint)."""

VIDEO_TEMPORAL_KEYS = ("temporal_transformer_blocks", "time_mixer")
"""Parameter-name pieces of SVD's temporal layers (the trainable part of the V-Expert: 397.6M in SVD)."""


# ----------------------------------------------------------------------------------------- layer matching


def layer_matching(n_layers: int, block_size: int) -> list[int]:
    """JointDiT block index of each expert layer l_e = 1..N (supplement, "Layer Matching").

    l_j = floor(l_e / B) if l_e <= floor(N/2) else ceil(floor(N/2) / B) + 1.
    """
    if n_layers < 2:
        raise ValueError(f"an expert needs at least 2 layers, got {n_layers}")
    if block_size < 1:
        raise ValueError(f"B must be >= 1, got {block_size}")
    half = n_layers // 2
    out_idx = math.ceil(half / block_size) + 1
    return [(l // block_size) if l <= half else out_idx for l in range(1, n_layers + 1)]


def check_block_size(n_video: int, n_audio: int, block_size: int) -> None:
    """The supplement's range 1 <= B < min(floor(N_video/2), floor(N_audio/2))."""
    hi = min(n_video // 2, n_audio // 2)
    if not (1 <= block_size < hi):
        raise ValueError(f"B={block_size} outside 1 <= B < {hi} for N_video={n_video}, N_audio={n_audio}")


@dataclass
class BlockPlan:
    """Which expert layers (0-based) go to the Input block, each Joint block and the Output block."""

    input: list[int]
    joints: list[list[int]]
    output: list[int]


def plan_blocks(n_layers: int, block_size: int, joint_ids: list[int] | None = None) -> tuple[BlockPlan, list[int]]:
    """Group one expert's layers by matched block index: lowest index = Input, highest = Output.

    `joint_ids` (sorted block indices of all Joint blocks, the union over both experts) lets an expert
    have an empty expert part in a Joint block when the two experts' layer counts differ.
    """
    idx = layer_matching(n_layers, block_size)
    lo, hi = min(idx), max(idx)
    mids = sorted({i for i in idx if lo < i < hi})
    joint_ids = mids if joint_ids is None else joint_ids
    plan = BlockPlan(
        input=[k for k, i in enumerate(idx) if i == lo],
        joints=[[k for k, i in enumerate(idx) if i == j] for j in joint_ids],
        output=[k for k, i in enumerate(idx) if i == hi],
    )
    return plan, mids


def match_experts(n_video: int, n_audio: int, block_size: int) -> tuple[BlockPlan, BlockPlan]:
    check_block_size(n_video, n_audio, block_size)
    _, mv = plan_blocks(n_video, block_size)
    _, ma = plan_blocks(n_audio, block_size)
    joint_ids = sorted(set(mv) | set(ma))
    return plan_blocks(n_video, block_size, joint_ids)[0], plan_blocks(n_audio, block_size, joint_ids)[0]


def expert_layers(unet: nn.Module, fold_mid_into_up: bool) -> list[list[tuple[str, int]]]:
    """The expert's layers as lists of UNet units ("down", i) / ("mid", 0) / ("up", i)."""
    downs = [[("down", i)] for i in range(len(unet.down_blocks))]
    ups = [[("up", i)] for i in range(len(unet.up_blocks))]
    if fold_mid_into_up:
        ups[0] = [("mid", 0)] + ups[0]
        return downs + ups
    return downs + [[("mid", 0)]] + ups


def _unit_sizes(config: dict, fold_mid_into_up: bool, hw: tuple[int, int]) -> list[tuple[int, int]]:
    """Spatial size of the hidden state after each layer of a diffusers UNet, from its config: every down
    block but the last ends in a stride-2 conv (k3, pad 1: n -> ceil(n/2)), every up block but the last
    upsamples back to the size of the matching skip."""
    n = len(config["down_block_types"])
    size, before, out = tuple(hw), [], []
    for i in range(n):
        if i < n - 1:
            before.append(size)
            size = tuple((d + 1) // 2 for d in size)
        out.append(size)
    ups = []
    for i in range(len(config["up_block_types"])):
        if i < len(config["up_block_types"]) - 1:
            size = before.pop()
        ups.append(size)
    mid = out[-1]
    return out + (ups if fold_mid_into_up else [mid] + ups)


def joint_token_counts(video_config: dict, audio_config: dict, block_size: int, video_latent: tuple[int, int, int],
                       audio_latent: tuple[int, int]) -> list[tuple[int, int]]:
    """(video tokens, audio tokens) of the joint attention of each Joint block, from the two UNet configs:
    video_latent = (frames, h, w) of the SVD latents, audio_latent = (T, M) of the AudioLDM2 latents.
    Each Joint block attends over the tokens its last expert layer outputs (an expert with no layer in a
    block keeps the size of its previous layer)."""
    f, h, w = video_latent
    sv = _unit_sizes(video_config, True, (h, w))
    sa = _unit_sizes(audio_config, False, tuple(audio_latent))
    pv, pa = match_experts(len(sv), len(sa), block_size)
    counts, lv, la = [], pv.input[-1], pa.input[-1]
    for jv, ja in zip(pv.joints, pa.joints):
        lv, la = (jv[-1] if jv else lv), (ja[-1] if ja else la)
        counts.append((f * sv[lv][0] * sv[lv][1], sa[la][0] * sa[la][1]))
    return counts


# ------------------------------------------------------------------------------------------------- RoPE


def rope_angles(pos: torch.Tensor, dims: list[int], theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles [N, sum(dims)/2] for positions [N, len(dims)] (one axis per RoPE section)."""
    out = []
    for a, d in enumerate(dims):
        if d == 0:
            continue
        inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float32, device=pos.device) / d)
        out.append(pos[:, a : a + 1].float() * inv)
    return torch.cat(out, dim=-1)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x [B, H, N, D] by angles [N, D/2]."""
    x2 = x.float().reshape(*x.shape[:-1], -1, 2)
    cos, sin = angles.cos(), angles.sin()
    a, b = x2[..., 0], x2[..., 1]
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)


def rope_sections(head_dim: int) -> tuple[list[int], list[int]]:
    """Head-dim split: time gets half (shared by both modalities so cross-modal scores see relative
    time); the rest is split into (height, width) for video and given to frequency for audio."""
    t = 2 * (head_dim // 4)
    rest = head_dim - t
    h = 2 * (rest // 4)
    return [t, h, rest - h], [t, rest]


def video_positions(frames: int, h: int, w: int, device) -> torch.Tensor:
    f, y, x = torch.meshgrid(
        torch.arange(frames, device=device), torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
    )
    return torch.stack([f, y, x], dim=-1).reshape(-1, 3).float()


def audio_positions(t: int, m: int, frames: int, device) -> torch.Tensor:
    """Audio rows placed on the video-frame time axis (row centres), frequency bins on the 2nd axis."""
    tt = (torch.arange(t, device=device).float() + 0.5) * frames / t - 0.5
    r, c = torch.meshgrid(tt, torch.arange(m, device=device).float(), indexing="ij")
    return torch.stack([r, c], dim=-1).reshape(-1, 2)


# ------------------------------------------------------------------------------------------- Joint block


def _modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


def _joint_sdpa(qv, kv, vv, qa, ka, va, block_diagonal: bool):
    """Attention over [video, audio] tokens ([B, H, N, D] each); block_diagonal: each modality attends only
    to itself, computed as two attentions (exactly a block-diagonal mask)."""
    if block_diagonal:
        return F.scaled_dot_product_attention(qv, kv, vv), F.scaled_dot_product_attention(qa, ka, va)
    o = F.scaled_dot_product_attention(torch.cat([qv, qa], 2), torch.cat([kv, ka], 2), torch.cat([vv, va], 2))
    nv = qv.shape[2]
    return o[:, :, :nv], o[:, :, nv:]


class PerceiverJointAttention(nn.Module):
    """Modality-specific Q/K projections into one shared QK width, modality-specific V projections into
    a separate value width, modality-specific output projections back to each modality's channels."""

    def __init__(self, dim_v: int, dim_a: int, qk_dim: int, value_dim: int, heads: int):
        super().__init__()
        if qk_dim % heads or value_dim % heads or (qk_dim // heads) % 2:
            raise ValueError(f"qk_dim {qk_dim} / value_dim {value_dim} must split into {heads} (even) heads")
        self.heads = heads
        self.qk_v, self.qk_a = nn.Linear(dim_v, 2 * qk_dim), nn.Linear(dim_a, 2 * qk_dim)
        self.val_v, self.val_a = nn.Linear(dim_v, value_dim), nn.Linear(dim_a, value_dim)
        self.out_v, self.out_a = nn.Linear(value_dim, dim_v), nn.Linear(value_dim, dim_a)

    def _heads(self, x):
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, xv, xa, rope_v, rope_a, block_diagonal: bool = False):
        qv, kv = self.qk_v(xv).chunk(2, dim=-1)
        qa, ka = self.qk_a(xa).chunk(2, dim=-1)
        qv, kv, qa, ka = (self._heads(t) for t in (qv, kv, qa, ka))
        qv, kv = apply_rope(qv, rope_v), apply_rope(kv, rope_v)
        qa, ka = apply_rope(qa, rope_a), apply_rope(ka, rope_a)
        vv, va = self._heads(self.val_v(xv)), self._heads(self.val_a(xa))
        ov, oa = _joint_sdpa(qv, kv, vv, qa, ka, va, block_diagonal)
        return self.out_v(ov.transpose(1, 2).flatten(2)), self.out_a(oa.transpose(1, 2).flatten(2))


class VanillaJointAttention(nn.Module):
    """The paper's "w/o Perceiver attn" ablation: each modality is projected to one shared width, then
    standard multi-head self-attention (one Q/K/V projection shared by both modalities, value width =
    QK width) runs over the concatenation, and each modality is projected back to its channels. The same
    RoPE as the Perceiver variant is applied to Q/K. The width (= qk_dim) is this project's choice."""

    def __init__(self, dim_v: int, dim_a: int, width: int, heads: int):
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise ValueError(f"width {width} must split into {heads} (even) heads")
        self.heads = heads
        self.in_v, self.in_a = nn.Linear(dim_v, width), nn.Linear(dim_a, width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out_v, self.out_a = nn.Linear(width, dim_v), nn.Linear(width, dim_a)

    _heads = PerceiverJointAttention._heads

    def forward(self, xv, xa, rope_v, rope_a, block_diagonal: bool = False):
        qv, kv, vv = (self._heads(t) for t in self.qkv(self.in_v(xv)).chunk(3, dim=-1))
        qa, ka, va = (self._heads(t) for t in self.qkv(self.in_a(xa)).chunk(3, dim=-1))
        qv, kv = apply_rope(qv, rope_v), apply_rope(kv, rope_v)
        qa, ka = apply_rope(qa, rope_a), apply_rope(ka, rope_a)
        ov, oa = _joint_sdpa(qv, kv, vv, qa, ka, va, block_diagonal)
        return self.out_v(ov.transpose(1, 2).flatten(2)), self.out_a(oa.transpose(1, 2).flatten(2))


class CrossModalPE(nn.Module):
    """CMC-PE (Hayakawa et al., "cross-modal conditioning as positional encoding"), adapted to a Joint
    block: each modality's tokens are averaged over space (video) / frequency (audio) to one feature per
    time step, linearly interpolated onto the other modality's time axis (sample centres aligned),
    projected to the other modality's channels, broadcast over its space / frequency axis and added to
    that modality's attention input like a positional encoding. The projections are zero-initialised,
    so a fresh block is unchanged. Adaptations (see docs/jointdit.md): the features are the block's own
    hidden states rather than a separate connector on the noisy latents, and there is no
    self-conditioning input; the self-attention that follows is the joint attention."""

    def __init__(self, dim_v: int, dim_a: int):
        super().__init__()
        self.a2v, self.v2a = nn.Linear(dim_a, dim_v), nn.Linear(dim_v, dim_a)
        for lin in (self.a2v, self.v2a):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @staticmethod
    def _retime(x: torch.Tensor, n: int) -> torch.Tensor:
        """[B, T, C] -> [B, n, C], linear interpolation in time (align_corners=False: centres aligned)."""
        return F.interpolate(x.transpose(1, 2), size=n, mode="linear", align_corners=False).transpose(1, 2)

    def forward(self, xv, xa, shapes):
        """xv [B, F*S, Cv] (frame-major), xa [B, T*M, Ca] (time-major), shapes (F, S, T, M) -> the
        encodings to add to xv and xa."""
        f, s, t, m = shapes
        b = xv.shape[0]
        v_time = xv.view(b, f, s, -1).mean(2)
        a_time = xa.view(b, t, m, -1).mean(2)
        pe_v = self.a2v(self._retime(a_time, f))[:, :, None].expand(b, f, s, -1).reshape(b, f * s, -1)
        pe_a = self.v2a(self._retime(v_time, t))[:, :, None].expand(b, t, m, -1).reshape(b, t * m, -1)
        return pe_v, pe_a


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: float):
        hidden = int(dim * mult)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class AdaLN(nn.Module):
    """Modality-specific adaptive LayerNorm: shift/scale/gate for the attention and the FF layer from
    the modality's timestep(+condition) embedding; zero-initialised, so a fresh Joint block is the
    identity and the pretrained experts start unchanged."""

    def __init__(self, dim: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 6 * dim))
        nn.init.zeros_(self.proj[1].weight)
        nn.init.zeros_(self.proj[1].bias)

    def forward(self, emb):
        return self.proj(emb).chunk(6, dim=-1)


class JointBlockLayers(nn.Module):
    """The JointDiT-owned part of one Joint block (everything but the expert layers)."""

    def __init__(self, dim_v, dim_a, emb_v, emb_a, qk_dim, value_dim, heads, ff_mult, attention="perceiver",
                 cmc_pe=False):
        super().__init__()
        self.ada_v, self.ada_a = AdaLN(dim_v, emb_v), AdaLN(dim_a, emb_a)
        if attention == "perceiver":
            self.attn = PerceiverJointAttention(dim_v, dim_a, qk_dim, value_dim, heads)
        else:
            self.attn = VanillaJointAttention(dim_v, dim_a, qk_dim, heads)
        self.cmc = CrossModalPE(dim_v, dim_a) if cmc_pe else None
        self.ff_v, self.ff_a = FeedForward(dim_v, ff_mult), FeedForward(dim_a, ff_mult)
        self.head_dim = qk_dim // heads

    def forward(self, xv, xa, ev, ea, rope_v, rope_a, mode: str = "full", shapes=None):
        """shapes (F, S, T, M): token grid of each modality (needed by CMC-PE). CMC-PE carries the other
        modality's features, so it is active in `full` mode only (block_diagonal / skip are the
        no-interaction negatives of JointCFG / JointCFG*)."""
        sv1, cv1, gv1, sv2, cv2, gv2 = self.ada_v(ev)
        sa1, ca1, ga1, sa2, ca2, ga2 = self.ada_a(ea)
        if mode != "skip":
            hv = _modulate(self.ada_v.norm(xv), sv1, cv1)
            ha = _modulate(self.ada_a.norm(xa), sa1, ca1)
            if self.cmc is not None and mode == "full":
                pv, pa = self.cmc(self.ada_v.norm(xv), self.ada_a.norm(xa), shapes)
                hv, ha = hv + pv, ha + pa
            av, aa = self.attn(hv, ha, rope_v, rope_a, block_diagonal=(mode == "block_diagonal"))
            xv = xv + gv1[:, None] * av
            xa = xa + ga1[:, None] * aa
        xv = xv + gv2[:, None] * self.ff_v(_modulate(self.ada_v.norm(xv), sv2, cv2))
        xa = xa + ga2[:, None] * self.ff_a(_modulate(self.ada_a.norm(xa), sa2, ca2))
        return xv, xa


# ------------------------------------------------------------------------------------ expert execution


@dataclass
class _State:
    """Running state of one expert between units: hidden state, skip stack and block kwargs."""

    h: torch.Tensor
    emb: torch.Tensor
    """per-sample embedding for the UNet blocks ([B*F, D] for video)."""
    emb_b: torch.Tensor
    """per-clip embedding [B, D] (AdaLN condition)."""
    kwargs: dict
    skips: tuple = ()
    up_size: bool = False
    last_was_down: bool = False
    extra: dict = field(default_factory=dict)


def _run_unit(unet, unit, st: _State) -> None:
    kind, i = unit
    if kind == "down":
        blk = unet.down_blocks[i]
        kw = st.kwargs if getattr(blk, "has_cross_attention", False) else st.kwargs_plain
        st.h, res = blk(hidden_states=st.h, temb=st.emb, **kw)
        st.skips = st.skips + tuple(res)
        st.last_was_down = True
    elif kind == "mid":
        st.h = unet.mid_block(hidden_states=st.h, temb=st.emb, **st.kwargs)
        st.last_was_down = False
    else:
        blk = unet.up_blocks[i]
        n = len(blk.resnets)
        res, st.skips = st.skips[-n:], st.skips[:-n]
        up_size = st.skips[-1].shape[2:] if (st.up_size and i < len(unet.up_blocks) - 1) else None
        kw = st.kwargs if getattr(blk, "has_cross_attention", False) else st.kwargs_plain
        st.h = blk(hidden_states=st.h, temb=st.emb, res_hidden_states_tuple=res, upsample_size=up_size, **kw)
        st.last_was_down = False


def _unit_channels(unet, unit) -> int:
    ch = list(unet.config.block_out_channels)
    kind, i = unit
    if kind == "down":
        return ch[i]
    if kind == "mid":
        return ch[-1]
    return list(reversed(ch))[i]


def _public(cfg) -> dict:
    return {k: _to_list(v) for k, v in dict(cfg).items() if not k.startswith("_")}


def _to_list(x):
    return [_to_list(v) for v in x] if isinstance(x, (list, tuple)) else x


class JointDiT(ModelMixin, ConfigMixin):
    """SVD + AudioLDM2 experts split into Input / Joint / Output blocks with Perceiver Joint Attention."""

    _supports_gradient_checkpointing = True
    ignore_for_config = ["video_unet", "audio_unet"]
    """Prebuilt (pretrained) experts are passed as modules; the config keeps their configs only."""

    @register_to_config
    def __init__(
        self,
        video_unet_config: dict | None = None,
        audio_unet_config: dict | None = None,
        block_size: int = 1,
        qk_dim: int = 512,
        value_dim: int = 1024,
        heads: int = 8,
        ff_mult: float = 2.0,
        clip_dim: int = 1024,
        num_frames: int = 14,
        video_unet: nn.Module | None = None,
        audio_unet: nn.Module | None = None,
        use_joint_blocks: bool = True,
        joint_attention: str = "perceiver",
        cmc_pe: bool = False,
    ):
        """Sizes: block_size (B of the layer matching), qk_dim / value_dim / heads of the joint attention,
        ff_mult of the feed-forward layers (the paper gives none of these widths: ours). Options (the
        paper's ablations and the sounding-video baseline's CMC-PE, all recorded in the config):
        use_joint_blocks=False removes the Joint blocks' own layers (experts run side by side, as the paper's
        "w/o Joint Block"); joint_attention="vanilla" replaces Perceiver Joint Attention by standard
        self-attention ("w/o Perceiver attn"); cmc_pe=True adds CMC-PE before each joint attention."""
        super().__init__()
        if joint_attention not in JOINT_ATTENTIONS:
            raise ValueError(f"joint_attention must be one of {JOINT_ATTENTIONS}, got {joint_attention!r}")
        if cmc_pe and not use_joint_blocks:
            raise ValueError("cmc_pe needs the Joint blocks (it feeds their joint attention): use_joint_blocks=False")
        if video_unet is None:
            video_unet = UNetSpatioTemporalConditionModel.from_config(video_unet_config)
        if audio_unet is None:
            audio_unet = AudioLDM2UNet2DConditionModel.from_config(audio_unet_config)
        self.video_unet, self.audio_unet = video_unet, audio_unet
        self.video_layers = expert_layers(self.video_unet, fold_mid_into_up=True)
        self.audio_layers = expert_layers(self.audio_unet, fold_mid_into_up=False)
        self.video_plan, self.audio_plan = match_experts(len(self.video_layers), len(self.audio_layers), block_size)
        emb_v = self.video_unet.time_embedding.linear_2.out_features
        emb_a = self.audio_unet.time_embedding.linear_2.out_features
        # A-Expert conditioning: CLIP image embedding added to AudioLDM2's timestep embedding
        self.audio_image_proj = nn.Linear(clip_dim, emb_a)
        nn.init.zeros_(self.audio_image_proj.weight)
        nn.init.zeros_(self.audio_image_proj.bias)
        dims_v = self._block_channels(self.video_unet, self.video_layers, self.video_plan)
        dims_a = self._block_channels(self.audio_unet, self.audio_layers, self.audio_plan)
        self.joint_blocks = nn.ModuleList(
            JointBlockLayers(dv, da, emb_v, emb_a, qk_dim, value_dim, heads, ff_mult, joint_attention, cmc_pe)
            for dv, da in zip(dims_v, dims_a)
        ) if use_joint_blocks else nn.ModuleList()
        self.rope_v_dims, self.rope_a_dims = rope_sections(qk_dim // heads)
        self.gradient_checkpointing = False

    @staticmethod
    def _block_channels(unet, layers, plan: BlockPlan) -> list[int]:
        out, last = [], layers[plan.input[-1]][-1]
        for group in plan.joints:
            if group:
                last = layers[group[-1]][-1]
            out.append(_unit_channels(unet, last))
        return out

    @classmethod
    def from_experts(cls, video_unet, audio_unet, **kwargs) -> "JointDiT":
        """Wrap already-built (e.g. pretrained) experts; the config records their configs only."""
        return cls(
            video_unet_config=_public(video_unet.config),
            audio_unet_config=_public(audio_unet.config),
            video_unet=video_unet,
            audio_unet=audio_unet,
            **kwargs,
        )

    @property
    def num_joint_blocks(self) -> int:
        """Joint blocks with their own layers (0 with use_joint_blocks=False)."""
        return len(self.joint_blocks)

    @property
    def has_joint_blocks(self) -> bool:
        return bool(self.config.use_joint_blocks)

    @staticmethod
    def options_from_config(config) -> dict:
        """Constructor arguments (sizes and options) of a saved JointDiT config, without the expert configs;
        configs written before an option existed get its default."""
        keys = ("block_size", "qk_dim", "value_dim", "heads", "ff_mult", "clip_dim", "num_frames") + OPTION_KEYS
        return {k: config[k] for k in keys if k in config}

    def joint_token_counts(self, video_latent: tuple[int, int, int], audio_latent: tuple[int, int]) -> list[tuple[int, int]]:
        """(video tokens, audio tokens) entering the joint attention of each Joint block, for video latents
        (frames, h, w) and audio latents (T, M); from the experts' configs only (works on the meta device).
        Paper shapes (256x256, 2 s: video 14x32x32, audio 50x16): [(896, 52), (224, 14), (224, 14)]."""
        return joint_token_counts(_public(self.video_unet.config), _public(self.audio_unet.config),
                                  self.config.block_size, video_latent, audio_latent)

    # ------------------------------------------------------------------ parameters: trainable / frozen

    def trainable_parameter_names(self) -> list[str]:
        """Joint blocks, the whole A-Expert (AudioLDM2 UNet) + its image projection, and only the
        temporal layers of the V-Expert (SVD UNet)."""
        names = []
        for n, _ in self.named_parameters():
            if n.startswith("video_unet."):
                if any(k in n for k in VIDEO_TEMPORAL_KEYS):
                    names.append(n)
            else:
                names.append(n)
        return names

    def set_trainable(self) -> None:
        keep = set(self.trainable_parameter_names())
        for n, p in self.named_parameters():
            p.requires_grad_(n in keep)

    def parameter_groups(self) -> dict[str, int]:
        """Parameter counts per module, for the table in docs/jointdit.md."""
        count = lambda it: sum(p.numel() for p in it)  # noqa: E731
        vt = sum(p.numel() for n, p in self.video_unet.named_parameters() if any(k in n for k in VIDEO_TEMPORAL_KEYS))
        return {
            "V-Expert (SVD UNet)": count(self.video_unet.parameters()),
            "V-Expert temporal (trainable)": vt,
            "A-Expert (AudioLDM2 UNet, self-attn only)": count(self.audio_unet.parameters()),
            "A image->temb projection": count(self.audio_image_proj.parameters()),
            "JointBlocks w/o expert": count(self.joint_blocks.parameters()),
        }

    # ----------------------------------------------------------------------------------------- forward

    def _video_state(self, sample, timestep, image_embeds, added_time_ids) -> _State:
        u = self.video_unet
        b, f = sample.shape[:2]
        t = timestep.expand(b) if timestep.ndim else timestep[None].expand(b)
        emb = u.time_embedding(u.time_proj(t).to(sample.dtype))
        aug = u.add_embedding(u.add_time_proj(added_time_ids.flatten()).reshape(b, -1).to(emb.dtype))
        emb = emb + aug
        ehs = image_embeds.repeat_interleave(f, dim=0)
        ind = torch.zeros(b, f, dtype=sample.dtype, device=sample.device)
        h = u.conv_in(sample.flatten(0, 1))
        st = _State(h=h, emb=emb.repeat_interleave(f, dim=0), emb_b=emb,
                    kwargs=dict(encoder_hidden_states=ehs, image_only_indicator=ind), skips=(h,))
        st.kwargs_plain = dict(image_only_indicator=ind)
        st.up_size = any(s % 2 ** u.num_upsamplers for s in sample.shape[-2:])
        st.extra = dict(batch=b, frames=f)
        return st

    def _audio_state(self, sample, timestep, image_embeds) -> _State:
        u = self.audio_unet
        b = sample.shape[0]
        t = timestep.expand(b) if timestep.ndim else timestep[None].expand(b)
        emb = u.time_embedding(u.time_proj(t).to(sample.dtype))
        emb = emb + self.audio_image_proj(image_embeds.flatten(1).to(emb.dtype))
        if u.time_embed_act is not None:
            emb = u.time_embed_act(emb)
        h = u.conv_in(sample)
        st = _State(h=h, emb=emb, emb_b=emb, kwargs=dict(encoder_hidden_states=None), skips=(h,))
        st.kwargs_plain = {}
        st.up_size = any(s % 2 ** u.num_upsamplers for s in sample.shape[-2:])
        return st

    @staticmethod
    def _video_finish(u, st):
        h = u.conv_out(u.conv_act(u.conv_norm_out(st.h)))
        return h.reshape(st.extra["batch"], st.extra["frames"], *h.shape[1:])

    @staticmethod
    def _audio_finish(u, st):
        h = st.h
        if u.conv_norm_out is not None:
            h = u.conv_act(u.conv_norm_out(h))
        return u.conv_out(h)

    def _joint(self, k: int, sv: _State, sa: _State, mode: str) -> None:
        b, f = sv.extra["batch"], sv.extra["frames"]
        _, cv, hv, wv = sv.h.shape
        _, ca, ta, ma = sa.h.shape
        xv = sv.h.reshape(b, f, cv, hv * wv).permute(0, 1, 3, 2).reshape(b, f * hv * wv, cv)
        xa = sa.h.flatten(2).transpose(1, 2)
        rv = rope_angles(video_positions(f, hv, wv, xv.device), self.rope_v_dims)
        ra = rope_angles(audio_positions(ta, ma, f, xa.device), self.rope_a_dims)
        blk = self.joint_blocks[k]
        shapes = (f, hv * wv, ta, ma)
        if self.gradient_checkpointing and torch.is_grad_enabled():
            xv, xa = torch.utils.checkpoint.checkpoint(blk, xv, xa, sv.emb_b, sa.emb_b, rv, ra, mode, shapes,
                                                       use_reentrant=False)
        else:
            xv, xa = blk(xv, xa, sv.emb_b, sa.emb_b, rv, ra, mode, shapes)
        new_v = xv.reshape(b, f, hv * wv, cv).permute(0, 1, 3, 2).reshape(b * f, cv, hv, wv)
        new_a = xa.transpose(1, 2).reshape(sa.h.shape)
        # skip connections carried across: a down block's last skip *is* its output, keep them equal
        for st, new in ((sv, new_v), (sa, new_a)):
            if st.last_was_down:
                st.skips = st.skips[:-1] + (new,)
            st.h = new

    def forward(
        self,
        video_sample: torch.Tensor,
        video_timestep: torch.Tensor,
        audio_sample: torch.Tensor,
        audio_timestep: torch.Tensor,
        image_embeds: torch.Tensor,
        added_time_ids: torch.Tensor,
        attention_mode: str = "full",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """video_sample [B, F, 8, h, w] (SVD input), video_timestep [B] (EDM c_noise), audio_sample
        [B, 8, T, M], audio_timestep [B] (DDPM index 0..999), image_embeds [B, 1, clip_dim] (zeros =
        null condition), added_time_ids [B, 3] -> (video F_theta [B, F, 4, h, w], audio eps [B, 8, T, M])."""
        if attention_mode not in ATTENTION_MODES:
            raise ValueError(f"attention_mode must be one of {ATTENTION_MODES}, got {attention_mode!r}")
        sv = self._video_state(video_sample, video_timestep, image_embeds, added_time_ids)
        sa = self._audio_state(audio_sample, audio_timestep, image_embeds)
        vu, au, vl, al = self.video_unet, self.audio_unet, self.video_layers, self.audio_layers
        for unet, layers, plan, st in ((vu, vl, self.video_plan, sv), (au, al, self.audio_plan, sa)):
            for li in plan.input:
                for unit in layers[li]:
                    _run_unit(unet, unit, st)
        for k in range(len(self.video_plan.joints)):
            for unet, layers, plan, st in ((vu, vl, self.video_plan, sv), (au, al, self.audio_plan, sa)):
                for li in plan.joints[k]:
                    for unit in layers[li]:
                        _run_unit(unet, unit, st)
            if self.num_joint_blocks:  # use_joint_blocks=False: the experts run side by side
                self._joint(k, sv, sa, attention_mode)
        for unet, layers, plan, st in ((vu, vl, self.video_plan, sv), (au, al, self.audio_plan, sa)):
            for li in plan.output:
                for unit in layers[li]:
                    _run_unit(unet, unit, st)
        return self._video_finish(vu, sv), self._audio_finish(au, sa)

    def enable_gradient_checkpointing(self, *a, **k):  # noqa: D102
        self.video_unet.enable_gradient_checkpointing()
        self.audio_unet.enable_gradient_checkpointing()
        self.gradient_checkpointing = True


# ------------------------------------------------------------------------------ loading the experts


def audio_unet_self_attention_only(unet: AudioLDM2UNet2DConditionModel) -> AudioLDM2UNet2DConditionModel:
    """AudioLDM2's UNet without its text cross-attention transformers (GPT-2 / T5 contexts): JointDiT has
    no text; each block keeps only its self-attention transformer. Weights are copied over with the
    transformer indices renumbered (old index i*n_ctx + j, j = position of the `None` context)."""
    cfg = _to_list(dict(unet.config))
    dims = cfg["cross_attention_dim"]
    per_block = [d if isinstance(d, list) else [d] for d in (dims if isinstance(dims, list) else [dims] * 4)]
    if all(len(d) == 1 and d[0] is None for d in per_block):
        return unet
    if any(None not in d for d in per_block):
        raise ValueError(f"every block needs a self-attention (None) context to keep, got {dims}")
    cfg["cross_attention_dim"] = [[None] for _ in per_block]
    new = AudioLDM2UNet2DConditionModel.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    n_ctx, j_self = len(per_block[0]), per_block[0].index(None)
    src = unet.state_dict()
    out = {}
    for name in new.state_dict():
        parts = name.split(".")
        if "attentions" in parts:
            a = parts.index("attentions")
            parts[a + 1] = str(int(parts[a + 1]) * n_ctx + j_self)
        out[name] = src[".".join(parts)]
    new.load_state_dict(out, strict=True)
    return new
