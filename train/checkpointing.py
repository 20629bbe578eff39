"""Training checkpoints without pickle: folders of safetensors + JSON, written atomically, pruned by retention.

A checkpoint folder `checkpoint-NNNNNN/` holds the trainable weights (`weights_file`), the EMA weights
(`ema.safetensors`), the optimizer (`optimizer.safetensors` + `optimizer.json`), the run state (`state.json`:
step, schedule, data position, the run's settings) and every process's random states (`rng-rank{r}.json`).
It is written under a temporary name and renamed, so a reader never sees a half-written one.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def optimizer_to_safetensors(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state dict as flat tensors + JSON."""
    tensors, other = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                other[f"{pid}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "other": other}


def optimizer_from_safetensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for key, v in list(tensors.items()) + list(meta["other"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state(generator: torch.Generator | None) -> dict:
    """Python, numpy, torch (CPU, CUDA) and the training generator's states, as JSON."""
    ver, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    out = {"python": [ver, list(mt), gauss], "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
           "torch": torch.get_rng_state().tolist()}
    if generator is not None:
        out["generator"] = generator.get_state().tolist()
    if torch.cuda.is_available():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(st: dict, generator: torch.Generator | None) -> None:
    random.setstate((st["python"][0], tuple(st["python"][1]), st["python"][2]))
    n = st["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(torch.tensor(st["torch"], dtype=torch.uint8))
    if generator is not None and "generator" in st:
        generator.set_state(torch.tensor(st["generator"], dtype=torch.uint8))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in st["cuda"]])


def checkpoint_step(path: Path) -> int | None:
    m = CHECKPOINT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """The complete checkpoint folders of a run, oldest first."""
    d = Path(out_dir)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if p.is_dir() and checkpoint_step(p) is not None), key=checkpoint_step)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    cks = list_checkpoints(out_dir)
    return cks[-1] if cks else None


def publish(tmp: Path, path: Path) -> Path:
    """Rename the finished folder `tmp` to `path`, replacing an older one of that name."""
    old = path.with_name("." + path.name + ".old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def prune(out_dir: str | Path, keep_last: int, milestones: set[int] = frozenset(), milestone_every: int = 0) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints (0: keep all), never a milestone (a step in
    `milestones`, or a multiple of `milestone_every`). Returns the deleted folders."""
    if keep_last <= 0:
        return []
    cks = list_checkpoints(out_dir)
    gone = []
    for p in cks[:-keep_last]:
        s = checkpoint_step(p)
        if s in milestones or (milestone_every and s % milestone_every == 0):
            continue
        shutil.rmtree(p)
        gone.append(p)
    return gone


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1))
