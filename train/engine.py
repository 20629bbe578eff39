"""The one training loop of the project's trainers (JointDiT, AVSyncD, the sync classifier).

A trainer builds its model and data and gives the engine two things: the trainable weights (a state-dict
function) and a loss function `loss_fn(batch, step) -> {"loss": tensor, other scalars}`. The engine does the
rest, the same way for every model:

- accelerate (one process, `accelerate launch`, torchrun); precision from `accelerate launch` unless the
  run sets it, bf16 by default on a GPU, TF32 matmuls on;
- AdamW, warm-up + schedule (diffusers' schedules, or the trainer's own lr function), gradient accumulation,
  gradient clipping, EMA of the trainable weights;
- a NaN/inf guard: an update whose gradient norm is not finite is skipped and counted; after
  `max_nonfinite` skipped updates the run stops with an error;
- loss and gradient norm averaged over all processes, logged to `log.jsonl` and the trackers (TensorBoard by
  default, W&B when installed and asked);
- periodic validation (the trainer's function: samples written to the run folder, metrics, audio and
  images sent to the trackers);
- checkpoints (`train.checkpointing`: safetensors, atomic, `keep_last` + milestones), also on SIGTERM /
  SIGUSR1 (then the run returns with `interrupted` set), and a strict resume that names any changed setting
  or weight in one line.

Only the main process writes to the run folder (a node-local folder on the other nodes is never needed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from train import checkpointing as ckpt

log = logging.getLogger("train.engine")

PRECISIONS = ("no", "fp16", "bf16")
LR_SCHEDULERS = ("constant_with_warmup", "constant", "cosine", "linear")


class ResumeMismatch(Exception):
    """A checkpoint that does not fit this run (a changed setting or weight); one line."""


class NonFiniteLoss(RuntimeError):
    """Too many updates with a NaN/inf gradient norm."""


@dataclass
class EngineSettings:
    out_dir: str
    steps: int
    lr: float
    weight_decay: float = 0.0
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 0
    lr_lambda: Callable[[int], float] | None = None
    """Trainer's own schedule: factor of `lr` at update n (replaces lr_scheduler)."""
    grad_accum: int = 1
    grad_clip: float = 1.0
    mixed_precision: str | None = None
    """no / fp16 / bf16; None: `accelerate launch`'s setting, else bf16 on a GPU, no on the CPU."""
    ema: bool = True
    ema_decay: float = 0.9999
    save_every: int = 1000
    keep_last: int = 3
    milestone_every: int = 0
    milestones: tuple[int, ...] = ()
    log_every: int = 10
    validate_every: int = 0
    max_nonfinite: int = 20
    trackers: tuple[str, ...] = ("tensorboard",)
    seed: int = 0
    progress: bool = True
    time_limit_s: float = math.inf
    cpu: bool = False
    generator_device: str | None = None
    """Device of the training generator (None: the accelerator's)."""
    name: str = "train"


class EMA:
    """Exponential moving average of the trainable weights, kept in float32 beside the model."""

    def __init__(self, params: dict[str, torch.Tensor], decay: float):
        self.decay, self.num_updates = decay, 0
        self.shadow = {k: p.detach().float().clone() for k, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor]) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        keys = list(self.shadow)
        torch._foreach_lerp_([self.shadow[k] for k in keys], [params[k].detach().float() for k in keys], 1.0 - d)


def resolve_precision(setting: str | None, cpu: bool = False) -> str | None:
    """The run's setting, else None when `accelerate launch` set one (accelerate reads it), else bf16 on a GPU."""
    if setting:
        return setting
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None
    return "bf16" if torch.cuda.is_available() and not cpu else "no"


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_settings(saved: dict, now: dict, may_change: set[str]) -> list[str]:
    """'key saved -> now' for every setting (flattened) that differs and may not change on resume."""
    a, b = flatten(saved), flatten(now)
    out = []
    for k in sorted(set(a) | set(b)):
        if k in may_change or k.split(".")[0] in may_change:
            continue
        if a.get(k, "<unset>") != b.get(k, "<unset>"):
            out.append(f"{k} {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}")
    return out


def weight_mismatch(saved: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> list[str]:
    missing = sorted(set(want) - set(saved))
    extra = sorted(set(saved) - set(want))
    shapes = [k for k in want if k in saved and tuple(saved[k].shape) != tuple(want[k].shape)]
    out = []
    if missing:
        out.append(f"{len(missing)} weight(s) missing from it (first: {missing[0]})")
    if extra:
        out.append(f"{len(extra)} unknown weight(s) in it (first: {extra[0]})")
    if shapes:
        k = shapes[0]
        out.append(f"{len(shapes)} weight(s) of another shape (first: {k} {tuple(saved[k].shape)} vs {tuple(want[k].shape)})")
    return out


class Engine:
    """One training run. Use: `eng = Engine(settings, run_config, may_change)`; build the model (downloads in
    `with eng.local_main_first():`); `eng.setup(model, weights)`; `state = eng.resume(path)`; build the data
    from `eng.consumed`; `eng.fit(iter(loader), loss_fn, validate)`."""

    def __init__(self, s: EngineSettings, run_config: dict, may_change: set[str] = frozenset()):
        from accelerate import Accelerator

        if s.mixed_precision is not None and s.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision={s.mixed_precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.s, self.run_config = s, json.loads(json.dumps(run_config, default=str))  # as saved (tuples -> lists)
        self.may_change = set(may_change) | {"steps", "log_every", "save_every", "progress", "resume", "keep_last",
                                             "validate_every", "num_workers", "time_limit_s", "max_minutes",
                                             "out_dir", "trackers", "max_nonfinite"}
        # torchrun without GPUs: accelerate only sets up its gloo process group when told to use the CPU
        cpu = s.cpu or (int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        trackers = [t for t in s.trackers if t and t != "none" and self._tracker_available(t)]
        self.acc = Accelerator(mixed_precision=resolve_precision(s.mixed_precision, cpu),
                               gradient_accumulation_steps=s.grad_accum, cpu=cpu,
                               log_with=trackers or None, project_dir=s.out_dir)
        self.out = Path(s.out_dir)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.trackers = trackers
        self.step = self.consumed = self.nonfinite = 0
        self.elapsed = 0.0
        self.extra_state: dict = {}
        self._rng_saved = None
        self._stop_signal: str | None = None
        gdev = s.generator_device or self.acc.device
        self.gen = torch.Generator(device=gdev).manual_seed(s.seed * 1000 + self.rank)

    @staticmethod
    def _tracker_available(name: str) -> bool:
        from accelerate.utils import is_tensorboard_available, is_wandb_available

        mod = name
        ok = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}.get(name, lambda: True)()
        if not ok:
            log.warning("tracker %s is not installed: not logging to it (pip install %s)", name, mod)
        return bool(ok)

    # ------------------------------------------------------------------------------ processes
    @property
    def is_main(self) -> bool:
        return self.acc.is_main_process

    @property
    def rank(self) -> int:
        return self.acc.process_index

    @property
    def world(self) -> int:
        return self.acc.num_processes

    @property
    def device(self) -> torch.device:
        return self.acc.device

    @property
    def precision(self) -> str:
        return str(self.acc.mixed_precision)

    @property
    def compute_dtype(self) -> torch.dtype:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)

    def local_main_first(self):
        """Hub downloads and one-off files: the first process of each node first, the others then read its copy."""
        return self.acc.local_main_process_first()

    def autocast(self):
        return self.acc.autocast()

    # ---------------------------------------------------------------------------------- setup
    def setup(self, model: torch.nn.Module, weights: Callable[[torch.nn.Module], dict[str, torch.Tensor]] | None = None,
              weights_file: str = "weights.safetensors", save_extra: Callable[[Path], None] | None = None,
              params: list[torch.nn.Parameter] | None = None):
        """Optimizer, schedule and EMA for the trainable parameters of `model`; returns the prepared model.
        `weights(raw_model)`: the tensors a checkpoint keeps (default: the trainable parameters);
        `save_extra(folder)`: the trainer's own files in each checkpoint (e.g. the model config)."""
        s = self.s
        params = params or [p for p in model.parameters() if p.requires_grad]
        self.params = params
        opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        self.model, self.opt = self.acc.prepare(model, opt)
        self.raw = self.acc.unwrap_model(self.model)
        ids = {id(p) for p in params}
        self.trainable = {n: p for n, p in self.raw.named_parameters() if id(p) in ids}
        if s.lr_lambda is not None:
            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, s.lr_lambda)
        else:
            from diffusers.optimization import get_scheduler

            self.sched = get_scheduler(s.lr_scheduler, self.opt, num_warmup_steps=s.lr_warmup_steps, num_training_steps=s.steps)
        self.ema = EMA(self.trainable, s.ema_decay) if s.ema else None
        self.weights = weights or (lambda raw: {n: p for n, p in self.trainable.items()})
        self.weights_file, self.save_extra = weights_file, save_extra
        return self.model

    # ----------------------------------------------------------------------------- checkpoints
    def checkpoint_path(self, step: int) -> Path:
        return self.out / f"checkpoint-{step:06d}"

    def save(self) -> Path:
        """Write checkpoint-<step> (call on every process; only the main process writes)."""
        from accelerate.utils import gather_object
        from safetensors.torch import save_file

        path = self.checkpoint_path(self.step)
        rngs = gather_object([ckpt.rng_state(self.gen)]) if self.world > 1 else [ckpt.rng_state(self.gen)]
        if self.is_main:
            tmp = path.with_name("." + path.name + ".tmp")
            if tmp.exists():
                import shutil

                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            for r, st in enumerate(rngs):
                (tmp / f"rng-rank{r}.json").write_text(json.dumps(st))
            save_file({k: v.detach().cpu().contiguous() for k, v in self.weights(self.raw).items()},
                      str(tmp / self.weights_file))
            if self.ema is not None:
                save_file({k: v.cpu().contiguous() for k, v in self.ema.shadow.items()}, str(tmp / "ema.safetensors"))
            tensors, meta = ckpt.optimizer_to_safetensors(self.opt.state_dict())
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(meta))
            if self.save_extra is not None:
                self.save_extra(tmp)
            state = {"step": self.step, "batches_consumed": self.consumed, "elapsed_s": self.elapsed,
                     "nonfinite_skipped": self.nonfinite, "scheduler": self.sched.state_dict(),
                     "ema_updates": self.ema.num_updates if self.ema else None, "world_size": self.world,
                     "run_config": self.run_config, **self.extra_state}
            state["scheduler"].pop("lr_lambdas", None)
            ckpt.write_json(tmp / "state.json", state)
            ckpt.publish(tmp, path)
            gone = ckpt.prune(self.out, self.s.keep_last, set(self.s.milestones), self.s.milestone_every)
            if gone:
                log.info("retention: removed %s", ", ".join(p.name for p in gone))
        self.acc.wait_for_everyone()
        return path

    def find_checkpoint(self, resume: str | None) -> Path | None:
        """The checkpoint to resume from, as the main process sees it (a node-local out_dir elsewhere is fine)."""
        if not resume:
            return None
        ck = (ckpt.latest_checkpoint(self.out) if resume == "latest" else Path(resume)) if self.is_main else None
        if self.world > 1:
            from accelerate.utils import broadcast_object_list

            ck = broadcast_object_list([str(ck) if ck else None])[0]
            ck = Path(ck) if ck else None
        if ck is None and self.is_main:
            log.info("resume=latest: no checkpoint in %s, starting at step 0", self.out)
        return ck

    def _read_checkpoint(self, path: Path) -> dict:
        """Everything in checkpoint folder `path`; processes that cannot see the folder (a node-local out_dir)
        get the main process's copy."""
        from safetensors.torch import load_file

        def read() -> dict:
            return {"state": json.loads((path / "state.json").read_text()),
                    "weights": load_file(str(path / self.weights_file)),
                    "optimizer": (load_file(str(path / "optimizer.safetensors")),
                                  json.loads((path / "optimizer.json").read_text())),
                    "ema": load_file(str(path / "ema.safetensors")) if (path / "ema.safetensors").exists() else None,
                    "rng": {int(f.stem.split("rank")[1]): json.loads(f.read_text()) for f in path.glob("rng-rank*.json")}}

        visible = (path / "state.json").is_file()
        if self.world > 1:
            flags = self.acc.gather(torch.tensor([1.0 if visible else 0.0], device=self.device))
            if bool((flags < 1).any()):
                from accelerate.utils import broadcast_object_list

                return broadcast_object_list([read() if self.is_main else None])[0]
        return read()

    def resume(self, path: str | Path | None) -> dict | None:
        """Restore weights, optimizer, schedule, EMA, step, data position (and, in `fit`, the random states)
        from checkpoint folder `path`; ResumeMismatch (one line) when a setting or a weight differs."""
        if path is None:
            return None
        path = Path(path)
        data = self._read_checkpoint(path)
        state = data["state"]
        saved_cfg = state.get("run_config", {})
        diff = changed_settings(saved_cfg, self.run_config, self.may_change)
        if diff:
            raise ResumeMismatch(f"cannot resume from {path}: settings differ from the checkpoint's: {'; '.join(diff)} "
                                 "(set them back, or start a new out_dir)")
        sd = data["weights"]
        want = self.weights(self.raw)
        bad = weight_mismatch(sd, want)
        if bad:
            raise ResumeMismatch(f"cannot resume from {path}: its weights do not fit this model: {'; '.join(bad)}")
        with torch.no_grad():
            for k, v in sd.items():
                want[k].copy_(v.to(want[k].device, want[k].dtype))
        self.opt.load_state_dict(ckpt.optimizer_from_safetensors(*data["optimizer"]))
        sched_state = self.sched.state_dict()
        sched_state.update({k: v for k, v in state["scheduler"].items() if k != "lr_lambdas"})
        self.sched.load_state_dict(sched_state)
        if self.ema is not None:
            if data["ema"] is not None:
                self.ema.shadow = {k: v.to(self.device) for k, v in data["ema"].items()}
                self.ema.num_updates = state.get("ema_updates") or 0
            else:
                log.warning("%s has no EMA weights: the EMA starts from the resumed weights", path)
        self.step, self.consumed = state["step"], state.get("batches_consumed", 0)
        self.elapsed, self.nonfinite = state.get("elapsed_s", 0.0), state.get("nonfinite_skipped", 0)
        if state.get("world_size", self.world) != self.world and self.is_main:
            log.warning("%s was written by %d processes, this run has %d: the data position is approximate",
                        path, state.get("world_size"), self.world)
        self._rng_saved = data["rng"].get(self.rank)
        if self.is_main:
            log.info("resumed from %s at step %d (%d batches consumed per process)", path, self.step, self.consumed)
        return state

    # ------------------------------------------------------------------------------------ loop
    def _on_signal(self, signum, frame):  # noqa: ARG002
        self._stop_signal = signal.Signals(signum).name

    @contextlib.contextmanager
    def _signals(self):
        old = {}
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                old[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass
        try:
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def fit(self, data: Iterator, loss_fn: Callable[[dict, int], dict],
            validate: Callable[[int], dict] | None = None) -> dict:
        """Train until `steps` (or a stop signal, or the time limit). Returns {"history": one record per update,
        "interrupted": signal name or None, "checkpoint": the last one written, "step"}."""
        s, acc = self.s, self.acc
        if self._rng_saved is not None:  # after the loader drew its worker seed, as the uninterrupted run did
            ckpt.set_rng_state(self._rng_saved, self.gen)
            self._rng_saved = None
        if self.trackers:
            acc.init_trackers(s.name, config={k: v for k, v in flatten(self.run_config).items()
                                              if isinstance(v, (int, float, str, bool))})
        logf = open(self.out / "log.jsonl", "a") if self.is_main else None
        bar = None
        if s.progress and self.is_main:
            from tqdm import tqdm

            bar = tqdm(total=s.steps, initial=self.step, desc=s.name, dynamic_ncols=True)
        history, window, micro = [], [], []
        last_ck, t_last, n_last = None, time.perf_counter(), self.step
        self.model.train()
        with self._signals():
            while self.step < s.steps:
                t0 = time.perf_counter()
                with acc.accumulate(self.model):
                    batch = next(data)
                    self.consumed += 1
                    out = loss_fn(batch, self.step)
                    acc.backward(out["loss"])
                    micro.append({k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in out.items() if isinstance(v, (torch.Tensor, float, int))})
                    gnorm = None
                    if acc.sync_gradients:
                        gnorm = acc.clip_grad_norm_(self.params, s.grad_clip if s.grad_clip else float("inf"))
                        gnorm = float(gnorm) if gnorm is not None else float("nan")
                        if not math.isfinite(gnorm) and acc.scaler is None:
                            self.opt.zero_grad(set_to_none=True)  # the guard: this update is skipped
                    self.opt.step()
                    self.opt.zero_grad(set_to_none=True)
                self.elapsed += time.perf_counter() - t0
                if not acc.sync_gradients:
                    continue
                finite = math.isfinite(gnorm)
                lr = self.opt.param_groups[0]["lr"]  # the rate this update used
                # one all-reduce per update: the mean of every logged scalar and the stop flag
                keys = sorted(micro[0])
                vec = torch.tensor([sum(m[k] for m in micro) / len(micro) for k in keys] +
                                   [1.0 if self._stop_signal else 0.0,
                                    1.0 if self.elapsed >= s.time_limit_s else 0.0], device=self.device, dtype=torch.float64)
                if self.world > 1:
                    vec = acc.reduce(vec, "sum")
                    vec[:len(keys)] /= self.world
                micro = []
                stop = bool(vec[-2] > 0) or bool(vec[-1] > 0)
                if not finite:
                    self.nonfinite += 1
                    if self.is_main:
                        log.warning("step %d: gradient norm %s, update skipped (%d so far, limit %d)",
                                    self.step + 1, gnorm, self.nonfinite, s.max_nonfinite)
                    if self.nonfinite >= s.max_nonfinite:
                        raise NonFiniteLoss(f"{self.nonfinite} updates had a NaN/inf loss or gradient (limit "
                                            f"max_nonfinite={s.max_nonfinite}); stopped at step {self.step}. Lower the "
                                            "learning rate, check the data, or resume from an earlier checkpoint")
                else:
                    self.sched.step()
                    if self.ema is not None:
                        self.ema.update(self.trainable)
                    self.step += 1
                    rec = {"step": self.step, **{k: float(vec[i]) for i, k in enumerate(keys)}, "lr": lr,
                           "grad_norm": gnorm}
                    history.append(rec)
                    window.append(rec)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{rec['loss']:.4f}")
                    if self.step % s.log_every == 0 or self.step == s.steps:
                        now = time.perf_counter()
                        agg = {"step": self.step, **{k: sum(w[k] for w in window) / len(window) for k in keys + ["grad_norm"]},
                               "lr": lr, "steps_per_s": (self.step - n_last) / max(now - t_last, 1e-9),
                               "elapsed_min": self.elapsed / 60, "nonfinite_skipped": self.nonfinite}
                        window, t_last, n_last = [], now, self.step
                        rec["steps_per_s"] = agg["steps_per_s"]
                        if self.is_main:
                            logf.write(json.dumps(agg) + "\n")
                            logf.flush()
                            if bar is None:
                                log.info("step %d loss %.4f lr %.3g %.2f steps/s", self.step, agg["loss"], lr, agg["steps_per_s"])
                        if self.trackers:
                            acc.log({f"train/{k}": v for k, v in agg.items() if k != "step"}, step=self.step)
                    if s.validate_every and self.step % s.validate_every == 0:
                        self.run_validation(validate, logf)
                    if self.step % s.save_every == 0 or self.step == s.steps:
                        last_ck = self.save()
                if stop:
                    why = self._stop_signal or "time limit"
                    if last_ck is None or ckpt.checkpoint_step(last_ck) != self.step:
                        last_ck = self.save()
                    if self.is_main:
                        log.warning("%s: saved %s, stopping (resume with resume=latest)", why, last_ck)
                    break
        if bar is not None:
            bar.close()
        if logf is not None:
            logf.close()
        acc.wait_for_everyone()
        if self.trackers:  # not acc.end_training(): it also destroys the process group, which the trainer still
            for tracker in acc.trackers:  # needs after fit (final save, barriers); one rank then failed its barrier
                tracker.finish()
        interrupted = self._stop_signal or ("time limit" if self.step < s.steps else None)
        return {"history": history, "interrupted": interrupted, "step": self.step,
                "checkpoint": str(last_ck or ckpt.latest_checkpoint(self.out) or "")}

    def run_validation(self, validate: Callable[[int], dict] | None, logf=None) -> dict | None:
        """Main process: the trainer's `validate(step)` -> {"metrics": {...}, "audio": {tag: (wave, rate)},
        "images": {tag: HWC uint8}, "files": [...]}; metrics go to log.jsonl, everything to the trackers."""
        res = None
        if self.is_main and validate is not None:
            was = self.raw.training
            self.raw.eval()
            with torch.no_grad():
                res = validate(self.step) or {}
            self.raw.train(was)
            metrics = res.get("metrics", {})
            if logf is not None:
                logf.write(json.dumps({"step": self.step, "eval": metrics, "files": [str(f) for f in res.get("files", [])]}) + "\n")
                logf.flush()
            if self.trackers:
                if metrics:
                    self.acc.log({f"val/{k}": v for k, v in metrics.items()}, step=self.step)
                self._log_media(res)
        self.acc.wait_for_everyone()
        return res

    def _log_media(self, res: dict) -> None:
        import numpy as np

        for name in self.trackers:
            tr = self.acc.get_tracker(name, unwrap=True)
            for tag, (wave, rate) in res.get("audio", {}).items():
                w = torch.as_tensor(np.asarray(wave, dtype=np.float32)).reshape(1, -1)
                if name == "tensorboard":
                    tr.add_audio(f"val/{tag}", w, self.step, sample_rate=int(rate))
                elif name == "wandb":
                    import wandb

                    tr.log({f"val/{tag}": wandb.Audio(w[0].numpy(), sample_rate=int(rate))}, step=self.step)
            for tag, img in res.get("images", {}).items():
                if name == "tensorboard":
                    tr.add_image(f"val/{tag}", np.asarray(img), self.step, dataformats="HWC")
                elif name == "wandb":
                    import wandb

                    tr.log({f"val/{tag}": wandb.Image(np.asarray(img))}, step=self.step)
            if name == "tensorboard":
                tr.flush()
