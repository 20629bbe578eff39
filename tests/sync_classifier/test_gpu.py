"""CUDA checks of the sync classifier (marker `gpu`, deselected by default; `python -m pytest -m gpu`).

The same model on CPU and on the GPU gives the same phi within a float tolerance; a training step with
fp16 (autocast + grad scaler) and with bf16 autocast runs on the GPU, keeps the loss finite and moves the
weights; the scorer runs on the GPU and agrees with the CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from sync_classifier.config import small
from sync_classifier.model import SyncClassifier
from train.sync_classifier import train_step

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device("cuda")


def _batch(cfg, b=2, k=5):
    s = cfg.model.spec
    g = torch.Generator().manual_seed(0)
    return {"mel": torch.randn(b, k, 1, s.n_mels, s.mel_frames, generator=g),
            "frames": torch.randint(0, 256, (b, k, s.num_frames, s.image_size, s.image_size, 3), dtype=torch.uint8, generator=g)}


def test_phi_on_gpu_matches_cpu(cuda):
    cfg = small()
    torch.manual_seed(0)
    model = SyncClassifier(cfg.model).eval()
    s = cfg.model.spec
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(3, int(s.duration * s.audio_rate), generator=g) * 0.1
    video = torch.randint(0, 256, (3, s.num_frames, 40, 48, 3), dtype=torch.uint8, generator=g)
    from sync_classifier.score import SyncScorer

    cpu = SyncScorer.from_model(model).phi(audio, video)
    gpu = SyncScorer.from_model(copy.deepcopy(model), device=cuda).phi(audio, video)
    torch.testing.assert_close(torch.from_numpy(gpu), torch.from_numpy(cpu), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_train_step_on_gpu(cuda, precision):
    cfg = small()
    cfg.mixed_precision = precision
    torch.manual_seed(0)
    model = SyncClassifier(cfg.model).to(cuda)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    for _ in range(3):
        m = train_step(model, _batch(cfg), opt, cfg, scaler=scaler)
        assert torch.isfinite(torch.tensor(m["loss"])), m
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(moved) == len(before), set(before) - set(moved)
