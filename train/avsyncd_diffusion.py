"""AVSyncD's objective and sampler, on diffusers' schedulers (SD 1.5's: DDPM in training, PNDM at inference).

Training: the first frame's clean latent is fed at every step (it is the condition) and the loss is the
epsilon MSE on frames 2..F only; the audio tokens are replaced by the null-audio tokens (ImageBind of an
all-zero mel) with probability 0.2. Sampling: frames 2..F start from noise, frame 1 stays clean, and audio
classifier-free guidance mixes eps = (1 - eta) eps(null audio) + eta eps(audio) (eta = 4 by default; 1
disables it and skips the null pass). Text guidance as in the authors' pipeline (off by default, as in their
evaluation: text scale 1): with text scale s_t > 1 and audio scale s_a > 1,
eps = e(-, -) + s_t (e(T, -) - e(-, -)) + s_a (e(T, A) - e(T, -)) (T text, A audio, - null); with s_a = 1,
eps = e(-, A) + s_t (e(T, A) - e(-, A)). The null text is the CLIP encoding of "".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, PNDMScheduler


@dataclass
class DiffusionConfig:
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    null_audio_prob: float = 0.2
    """Probability of training a clip on the null audio (for classifier-free audio guidance)."""
    guidance: float = 4.0
    """Audio guidance eta at inference."""
    text_guidance: float = 1.0
    """Text guidance scale at inference (the authors' pipeline; 1 = off, their evaluation's setting)."""
    sample_steps: int = 50
    """PNDM steps at inference (the authors' evaluation uses 50)."""


def _common(cfg: DiffusionConfig) -> dict:
    return dict(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
                beta_schedule=cfg.beta_schedule, steps_offset=1)


def train_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(**_common(cfg), clip_sample=False, prediction_type="epsilon")


def sample_scheduler(cfg: DiffusionConfig) -> PNDMScheduler:
    """SD 1.5's scheduler/scheduler_config.json."""
    return PNDMScheduler(**_common(cfg), skip_prk_steps=True, set_alpha_to_one=False, prediction_type="epsilon")


def training_loss(unet, latents: torch.Tensor, text: torch.Tensor, audio: torch.Tensor, null_audio: torch.Tensor,
                  scheduler: DDPMScheduler, null_prob: float = 0.2, generator=None) -> dict:
    """latents [B, F, C, h, w] (clean), text [B, L, D], audio / null_audio [B or 1, F, S, Da] -> {'loss', 't'}."""
    b = latents.shape[0]
    dev = latents.device
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), device=dev, generator=generator)
    noise = torch.randn(latents.shape, device=dev, generator=generator, dtype=latents.dtype)
    noisy = scheduler.add_noise(latents, noise, t)
    noisy = torch.cat([latents[:, :1], noisy[:, 1:]], 1)  # frame 1 clean: the condition
    drop = torch.rand(b, device=dev, generator=generator) < null_prob
    audio = torch.where(drop[:, None, None, None], null_audio.expand_as(audio).to(audio.dtype), audio)
    eps = unet(noisy, t, text, audio).sample
    loss = F.mse_loss(eps[:, 1:].float(), noise[:, 1:].float())
    return {"loss": loss, "t": t, "null": drop}


def guided_eps(unet, x: torch.Tensor, t, text: torch.Tensor, audio: torch.Tensor, null_audio: torch.Tensor,
               guidance: float, null_text: torch.Tensor | None = None, text_guidance: float = 1.0) -> torch.Tensor:
    """Classifier-free guidance as in the authors' pipeline (module docstring); all passes in one batch."""
    use_text = text_guidance != 1.0
    if use_text and null_text is None:
        raise ValueError("text guidance needs the null-text encoding (CLIP of the empty prompt)")
    b = x.shape[0]
    null_a = null_audio.expand_as(audio).to(audio.dtype)
    if use_text:
        null_t = null_text.expand_as(text).to(text.dtype)
    if guidance == 1.0 and not use_text:
        return unet(x, t, text, audio).sample
    if not use_text:  # audio only: e(T, -) + s_a (e(T, A) - e(T, -))
        eps = unet(torch.cat([x, x]), t, torch.cat([text, text]), torch.cat([null_a, audio])).sample
        e_null, e_audio = eps[:b], eps[b:]
        return (1 - guidance) * e_null + guidance * e_audio
    if guidance == 1.0:  # text only: e(-, A) + s_t (e(T, A) - e(-, A))
        eps = unet(torch.cat([x, x]), t, torch.cat([null_t, text]), torch.cat([audio, audio])).sample
        e_a, e_ta = eps[:b], eps[b:]
        return e_a + text_guidance * (e_ta - e_a)
    eps = unet(torch.cat([x, x, x]), t, torch.cat([null_t, text, text]), torch.cat([null_a, null_a, audio])).sample
    e_u, e_t, e_ta = eps[:b], eps[b:2 * b], eps[2 * b:]
    return e_u + text_guidance * (e_t - e_u) + guidance * (e_ta - e_t)


@torch.no_grad()
def sample(unet, first: torch.Tensor, text: torch.Tensor, audio: torch.Tensor, null_audio: torch.Tensor,
           scheduler: PNDMScheduler, num_frames: int, steps: int = 50, guidance: float = 4.0, generator=None,
           progress: bool = False, null_text: torch.Tensor | None = None, text_guidance: float = 1.0,
           inplace_update: bool = False) -> torch.Tensor:
    """first [B, C, h, w] clean latent of the conditioning image -> latents [B, F, C, h, w] (frame 1 = first).
    Runs in `first`'s dtype (float16 for the authors' evaluation setting).

    `inplace_update` reproduces the authors' pipeline exactly: it hands PNDM a view of the latents and writes
    the step's result back into them, and PNDM keeps that view as the sample of its first PLMS step, so the
    repeated first step (diffusers' PLMS warm-up) starts from the already-updated latents instead of the
    original ones. Off: diffusers' ordinary PLMS (as SD's own pipeline)."""
    from tqdm import tqdm

    b = first.shape[0]
    c, h, w = first.shape[1:]
    # drawn in the authors' layout (b c f h w), so a generator seed gives their initial noise
    x = torch.randn((b, c, num_frames - 1, h, w), generator=generator, device=first.device,
                    dtype=first.dtype).transpose(1, 2).contiguous() * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps, device=first.device)
    full = torch.cat([first[:, None], x], 1)
    for t in tqdm(scheduler.timesteps, disable=not progress, desc="sampling", leave=False):
        eps = guided_eps(unet, scheduler.scale_model_input(full, t), t, text, audio, null_audio, guidance,
                         null_text, text_guidance)
        if inplace_update:
            full[:, 1:] = scheduler.step(eps[:, 1:], t, full[:, 1:]).prev_sample
        else:
            full = torch.cat([full[:, :1], scheduler.step(eps[:, 1:], t, full[:, 1:].clone()).prev_sample], 1)
    return full


__all__ = ["DiffusionConfig", "train_scheduler", "sample_scheduler", "training_loss", "guided_eps", "sample"]
