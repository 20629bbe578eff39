"""A toy training on train.engine for the multi-process tests: `python -m tests.train.engine_toy OUT STEPS
[--kill-at N] [--resume]` (rank 0 sends itself SIGTERM before micro-batch N)."""

from __future__ import annotations

import argparse
import json
import os
import signal

import torch

from train.engine import Engine, EngineSettings


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("steps", type=int)
    p.add_argument("--kill-at", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--node-local", action="store_true", help="ranks > 0 get a folder of their own (never created)")
    a = p.parse_args()
    rank = int(os.environ.get("RANK", "0"))
    s = EngineSettings(out_dir=a.out if rank == 0 or not a.node_local else f"{a.out}-rank{rank}", steps=a.steps, lr=1e-2, grad_accum=2, save_every=100, progress=False,
                       trackers=(), cpu=True, ema_decay=0.9)
    eng = Engine(s, run_config={"lr": 1e-2})
    torch.manual_seed(0)
    eng.setup(torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)))
    eng.resume(eng.find_checkpoint("latest" if a.resume else None))
    xs = torch.randn(256, 3, generator=torch.Generator().manual_seed(1))

    def data(i):
        while True:  # each rank its own batches
            j = (8 * (2 * i + eng.rank)) % 256
            yield xs[j:j + 8]
            i += 1

    def loss_fn(x, step):
        if a.kill_at is not None and eng.rank == 0 and eng.consumed == a.kill_at:
            os.kill(os.getpid(), signal.SIGTERM)
        noise = torch.randn(x.shape, generator=eng.gen) * 0.01
        return {"loss": torch.nn.functional.mse_loss(eng.model(x + noise), x.sum(1, keepdim=True))}

    r = eng.fit(data(eng.consumed), loss_fn)
    if eng.is_main:
        print(json.dumps({"interrupted": r["interrupted"], "step": r["step"],
                          "losses": [h["loss"] for h in r["history"]]}))


if __name__ == "__main__":
    main()
