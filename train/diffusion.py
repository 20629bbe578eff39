"""JointDiT's diffusion: unified timestep, the two experts' original objectives, guided joint sampler.

- Unified timestep t_uni in (0, 1): DDPM t = ceil(1000 t_uni) (1..1000, diffusers index t - 1) for
  audio (AudioLDM2: epsilon prediction, scaled-linear betas 0.0015..0.0195); EDM log sigma = P_mean +
  P_std * Phi^-1(t_uni) for video (SVD: EDM preconditioning with sigma_data = 1, v-prediction,
  c_noise = 0.25 log sigma).
- Loss = lambda1 * EDM-weighted video x0 loss + lambda2 * AudioLDM2's epsilon loss.
- Sampling: one decreasing t_uni grid drives both modalities (video Euler on sigma(t_uni), audio DDIM
  on t(t_uni)); guidance on the clean-latent predictions: D + w (D - D_neg) with D_neg from
  cfg (unconditional), jointcfg (unconditional, block-diagonal attention) or jointcfg_star
  (unconditional, full-attention layers removed).
- Options from the sounding-video baseline (Hayakawa et al.): timestep adjustment (`timestep_gamma`:
  video gets t_uni^sqrt(gamma), audio t_uni^(1/sqrt(gamma)), the continuous form of their
  m(t) = round(T_v (t/T)^sqrt(gamma)), n(t) = round(T_a (t/T)^(1/sqrt(gamma))); `adjusted_timesteps` is the
  discrete formula) and independently sampled video/audio timesteps in training (`independent_timesteps`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GUIDANCE_NEGATIVE = {"cfg": "full", "jointcfg": "block_diagonal", "jointcfg_star": "skip"}
"""Attention mode of the negative (unconditional) branch of each guidance method."""


@dataclass
class DiffusionConfig:
    p_mean: float = 0.7
    """Mean of SVD's EDM log-sigma distribution (SVD's value; the JointDiT paper does not give it)."""
    p_std: float = 1.6
    """Spread of SVD's EDM log-sigma distribution (log sigma ~ N(0.7, 1.6^2))."""
    sigma_min: float = 0.002
    """Smallest video noise level used in sampling (EDM's value)."""
    sigma_max: float = 700.0
    """Largest video noise level used in sampling (SVD's value)."""
    num_train_timesteps: int = 1000
    """AudioLDM2's number of DDPM steps (T in t = ceil(T t_uni))."""
    beta_start: float = 0.0015
    """First beta of AudioLDM2's scaled-linear DDPM schedule."""
    beta_end: float = 0.0195
    """Last beta of AudioLDM2's scaled-linear DDPM schedule."""
    lambda_video: float = 1.0
    """Weight of the video loss (lambda1; the paper does not give its value: 1 is ours)."""
    lambda_audio: float = 1.0
    """Weight of the audio loss (lambda2; 1 is ours)."""
    t_eps: float = 1e-4
    """t_uni is kept in [t_eps, 1 - t_eps] so Phi^-1 stays finite."""
    timestep_gamma: float = 1.0
    """Timestep adjustment of Hayakawa et al.: video runs at t_uni^sqrt(gamma), audio at t_uni^(1/sqrt(gamma))
    (video less noisy than audio for gamma > 1). 1.0 = off (JointDiT); their paper uses 1.5."""
    independent_timesteps: bool = False
    """Training: draw the video and the audio timestep independently (each U(0,1)), as Hayakawa et al. do
    so that any gamma can be used at sampling; off: one unified timestep (JointDiT), then the adjustment."""

    def __post_init__(self):
        if not self.timestep_gamma > 0:
            raise ValueError(f"timestep_gamma must be > 0, got {self.timestep_gamma}")


# ------------------------------------------------------------------------------------ timestep maps


def ddpm_timestep(t_uni: torch.Tensor, num_train_timesteps: int = 1000) -> torch.Tensor:
    """t = ceil(T t_uni), in 1..T (Eq. 4)."""
    return torch.ceil(t_uni * num_train_timesteps).long().clamp(1, num_train_timesteps)


def edm_log_sigma(t_uni: torch.Tensor, p_mean: float, p_std: float) -> torch.Tensor:
    """log sigma = P_mean + P_std * Phi^-1(t_uni) (Eq. 5)."""
    return p_mean + p_std * math.sqrt(2.0) * torch.erfinv(2.0 * t_uni - 1.0)


def adjusted_timesteps(t, T: int, T_v: int, T_a: int, gamma: float):
    """Hayakawa et al. Eq. 9: local timesteps m(t) = round(T_v (t/T)^sqrt(gamma)) (video) and
    n(t) = round(T_a (t/T)^(1/sqrt(gamma))) (audio) of a global timestep t in 0..T."""
    t = torch.as_tensor(t, dtype=torch.float64)
    r = math.sqrt(gamma)
    return torch.round(T_v * (t / T) ** r).long(), torch.round(T_a * (t / T) ** (1.0 / r)).long()


def adjust_unified(t_uni: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The adjustment on JointDiT's unified timestep (t/T = t_uni): (video t_uni^sqrt(gamma), audio
    t_uni^(1/sqrt(gamma))). JointDiT's own maps then give sigma (video) and ceil(1000 t) (audio), so for
    the audio index this equals Eq. 9 up to ceil instead of round (at most one step apart)."""
    if gamma == 1.0:
        return t_uni, t_uni
    r = math.sqrt(gamma)
    return t_uni.clamp(min=0) ** r, t_uni.clamp(min=0) ** (1.0 / r)


def alphas_cumprod(cfg: DiffusionConfig, device=None) -> torch.Tensor:
    betas = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, cfg.num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float().to(device)


def edm_precond(sigma: torch.Tensor):
    """SVD's EDM preconditioning (sigma_data = 1, v-prediction): c_skip, c_out, c_in, c_noise."""
    s2 = sigma**2 + 1.0
    return 1.0 / s2, -sigma / s2.sqrt(), 1.0 / s2.sqrt(), 0.25 * sigma.log()


def _bcast(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *([1] * (ref.ndim - 1)))


# --------------------------------------------------------------------------------------- conditions


@dataclass
class Condition:
    """Image condition of a batch: SVD image latent [B, 4, h, w] (unscaled mode, as SVD), CLIP image
    embedding [B, 1, D], SVD added time ids [B, 3] (fps - 1, motion bucket, noise aug strength)."""

    image_latents: torch.Tensor
    image_embeds: torch.Tensor
    added_time_ids: torch.Tensor

    def null(self) -> "Condition":
        """Null condition: zero image latent and zero CLIP embedding (SVD's unconditional branch)."""
        return Condition(torch.zeros_like(self.image_latents), torch.zeros_like(self.image_embeds), self.added_time_ids)

    def drop(self, p: float, generator=None) -> "Condition":
        """Per-sample condition dropout (training)."""
        b = self.image_latents.shape[0]
        keep = (torch.rand(b, generator=generator, device=self.image_latents.device) >= p).to(self.image_latents.dtype)
        return Condition(
            self.image_latents * _bcast(keep, self.image_latents),
            self.image_embeds * _bcast(keep, self.image_embeds).to(self.image_embeds.dtype),
            self.added_time_ids,
        )


class JointDiffusion:
    def __init__(self, cfg: DiffusionConfig = DiffusionConfig()):
        self.cfg = cfg
        self._acp = alphas_cumprod(cfg)

    def acp(self, device) -> torch.Tensor:
        if self._acp.device != torch.device(device):
            self._acp = self._acp.to(device)
        return self._acp

    # ------------------------------------------------------------------------------------ denoiser

    def denoise(self, model, v_t, sigma, a_t, t_index, cond: Condition, attention_mode="full"):
        """Clean-latent predictions (v0_hat, a0_hat) and the raw outputs of one joint forward.

        v_t [B, F, 4, h, w] noisy video latents at noise level sigma [B]; a_t [B, 8, T, M] noisy audio
        latents at DDPM index t_index [B] (0..999)."""
        c_skip, c_out, c_in, c_noise = edm_precond(sigma)
        f = v_t.shape[1]
        img = cond.image_latents.unsqueeze(1).expand(-1, f, -1, -1, -1)
        v_in = torch.cat([v_t * _bcast(c_in, v_t), img.to(v_t.dtype)], dim=2)
        v_out, eps = model(v_in, c_noise, a_t, t_index, cond.image_embeds, cond.added_time_ids, attention_mode)
        v0 = _bcast(c_skip, v_t) * v_t + _bcast(c_out, v_t) * v_out
        acp = self.acp(a_t.device)[t_index]
        a0 = (a_t - _bcast((1 - acp).sqrt(), a_t) * eps) / _bcast(acp.sqrt(), a_t)
        return v0, a0, v_out, eps

    # ------------------------------------------------------------------------------------ training

    def sample_t_uni(self, b: int, device, generator=None) -> torch.Tensor:
        u = torch.rand(b, generator=generator, device=device)
        return u.clamp(self.cfg.t_eps, 1 - self.cfg.t_eps)

    def training_losses(self, model, v0, a0, cond: Condition, t_uni=None, noise_v=None, noise_a=None, generator=None):
        """Both experts' original objectives at one unified timestep per sample (Eq. 4-7); with
        `timestep_gamma` != 1 the two modalities get the adjusted timesteps of it, with
        `independent_timesteps` each its own; `t_uni` may also be an explicit (video, audio) pair.

        Video: EDM loss lambda(sigma) ||D - v0||^2 with lambda = (sigma^2 + 1) / sigma^2, computed in
        the network's output space (identical, numerically stable). Audio: ||eps - eps_hat||^2."""
        b, dev = v0.shape[0], v0.device
        t_uni = self.sample_t_uni(b, dev, generator) if t_uni is None else t_uni
        if isinstance(t_uni, tuple):  # explicit (video, audio) timesteps
            t_v, t_a = t_uni
        elif self.cfg.independent_timesteps:
            t_v, t_a = t_uni, self.sample_t_uni(b, dev, generator)
        else:
            t_v, t_a = adjust_unified(t_uni, self.cfg.timestep_gamma)
        t_v = t_v.clamp(self.cfg.t_eps, 1 - self.cfg.t_eps)
        noise_v = torch.randn(v0.shape, generator=generator, device=dev) if noise_v is None else noise_v
        noise_a = torch.randn(a0.shape, generator=generator, device=dev) if noise_a is None else noise_a
        sigma = edm_log_sigma(t_v, self.cfg.p_mean, self.cfg.p_std).exp()
        t_index = ddpm_timestep(t_a, self.cfg.num_train_timesteps) - 1
        v_t = v0 + _bcast(sigma, v0) * noise_v
        acp = self.acp(dev)[t_index]
        a_t = _bcast(acp.sqrt(), a0) * a0 + _bcast((1 - acp).sqrt(), a0) * noise_a
        c_skip, c_out, _, _ = edm_precond(sigma)
        _, _, v_out, eps = self.denoise(model, v_t, sigma, a_t, t_index, cond)
        v_target = (v0 - _bcast(c_skip, v0) * v_t) / _bcast(c_out, v0)
        loss_v = ((v_out.float() - v_target.float()) ** 2).mean()
        loss_a = ((eps.float() - noise_a.float()) ** 2).mean()
        loss = self.cfg.lambda_video * loss_v + self.cfg.lambda_audio * loss_a
        return {"loss": loss, "video": loss_v.detach(), "audio": loss_a.detach()}

    # ------------------------------------------------------------------------------------ sampling

    def grid(self, steps: int, device=None) -> torch.Tensor:
        """Decreasing unified-timestep grid t_uni: 1 - t_eps ... -> 0 (steps + 1 points, last = clean)."""
        u = torch.linspace(1 - self.cfg.t_eps, 0.0, steps + 1, device=device)
        return u

    def sigma_of(self, u: torch.Tensor) -> torch.Tensor:
        s = edm_log_sigma(u.clamp(min=self.cfg.t_eps), self.cfg.p_mean, self.cfg.p_std).exp()
        return torch.where(u > 0, s.clamp(self.cfg.sigma_min, self.cfg.sigma_max), torch.zeros_like(s))

    def guided(self, model, v_t, sigma, a_t, t_index, cond: Condition, guidance: str, scale: float):
        """Guided clean-latent predictions: D(c) + w (D(c) - D_neg)."""
        v0, a0, _, _ = self.denoise(model, v_t, sigma, a_t, t_index, cond, "full")
        if guidance == "none" or scale == 0:
            return v0, a0
        if guidance not in GUIDANCE_NEGATIVE:
            raise ValueError(f"guidance must be one of {sorted(GUIDANCE_NEGATIVE)} or 'none', got {guidance!r}")
        if guidance != "cfg" and not getattr(model, "has_joint_blocks", True):
            raise ValueError(f"guidance {guidance!r} needs Joint blocks (this model has use_joint_blocks=false): use cfg")
        nv0, na0, _, _ = self.denoise(model, v_t, sigma, a_t, t_index, cond.null(), GUIDANCE_NEGATIVE[guidance])
        return v0 + scale * (v0 - nv0), a0 + scale * (a0 - na0)

    @torch.no_grad()
    def sample(self, model, cond: Condition, video_shape, audio_shape, steps=25, guidance="jointcfg_star",
               scale=1.5, generator=None, progress=None):
        """Joint sampling over one t_uni grid (video at sigma(u_v), audio at DDPM index of u_a, with
        (u_v, u_a) = adjust_unified(u, timestep_gamma)); returns clean video [B, F, 4, h, w] and audio latents."""
        dev = cond.image_embeds.device
        dtype = next(model.parameters()).dtype
        b = cond.image_embeds.shape[0]
        u = self.grid(steps, dev)
        u_v, u_a = adjust_unified(u, self.cfg.timestep_gamma)
        sig = self.sigma_of(u_v)
        tidx = ddpm_timestep(u_a.clamp(min=self.cfg.t_eps), self.cfg.num_train_timesteps) - 1
        acp = self.acp(dev)
        v = torch.randn((b, *video_shape), generator=generator, device=dev) * sig[0]
        a = torch.randn((b, *audio_shape), generator=generator, device=dev)
        it = range(steps) if progress is None else progress(range(steps))
        for i in it:
            s, s_next = sig[i], sig[i + 1]
            t, t_next = tidx[i], tidx[i + 1]
            sb, tb = s.expand(b), t.expand(b)
            v0, a0 = self.guided(model, v.to(dtype), sb.to(dtype), a.to(dtype), tb, cond, guidance, scale)
            v0, a0 = v0.float(), a0.float()
            # video: Euler step of the probability-flow ODE in sigma
            v = v0 if s_next == 0 else v + (s_next - s) * (v - v0) / s
            # audio: deterministic DDIM step from t to t_next
            if u[i + 1] == 0:
                a = a0
            else:
                eps = (a - acp[t].sqrt() * a0) / (1 - acp[t]).sqrt()
                a = acp[t_next].sqrt() * a0 + (1 - acp[t_next]).sqrt() * eps
        return v, a


def added_time_ids(b: int, fps: float, motion_bucket_id: int, noise_aug: float, device) -> torch.Tensor:
    """SVD's added time ids (fps - 1, motion bucket, noise augmentation) for a batch of B."""
    return torch.tensor([[fps - 1, motion_bucket_id, noise_aug]], device=device, dtype=torch.float32).repeat(b, 1)


@torch.no_grad()
def generate(model, frozen, image: torch.Tensor, spec, guidance="jointcfg_star", scale=1.5, steps=25, seed=0,
             motion_bucket_id=127, noise_aug=0.02, progress=None, diffusion=None):
    """image [B, 3, H, W] in [-1, 1] -> (frames uint8 [B, F, H, W, 3], audio float [B, N] at 16 kHz).
    `diffusion`: the DiffusionConfig the model was trained with (`train.jointdit.checkpoint_diffusion`)."""
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    image = image.to(dev)
    b = image.shape[0]
    cond = Condition(frozen.encode_image(image, noise_aug, g), frozen.clip_embed(image),
                     added_time_ids(b, spec.fps, motion_bucket_id, noise_aug, dev))
    _, c, h, w = cond.image_latents.shape
    vshape = (spec.num_frames, c, h, w)
    a_ch = model.audio_unet.config.in_channels
    f_lat = spec.n_mels // 2 ** (len(frozen.audio_vae.config.block_out_channels) - 1)
    t_lat = spec.mel_frames // 2 ** (len(frozen.audio_vae.config.block_out_channels) - 1)
    model.eval()
    v, a = JointDiffusion(diffusion or DiffusionConfig()).sample(model, cond, vshape, (a_ch, t_lat, f_lat), steps, guidance, scale, g, progress)
    frames = frozen.decode_video(v)
    wav = frozen.decode_audio(a)[:, : spec.num_samples]
    frames = ((frames.permute(0, 1, 3, 4, 2) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    return frames, wav.cpu().numpy()
