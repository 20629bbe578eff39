"""The stage interface: a filter is a small declared unit with parameters, resources, a score and a rule.

A stage scores every window it is given (writing `window.scores[column]`) and states, as a pure function
of those scores, why a window would be dropped. Keeping the decision apart from the scoring is what makes
"score everything once, re-apply thresholds later" (`pipelines.refilter`) exact: `decide()` sees only the
stored scores. Stages never import Ray; `curate.ray_runner` runs any stage on Ray actors.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field, fields
from typing import ClassVar, Sequence

import numpy as np

from media.decode import DecodedVideo
from curate.records import Window


class StageUnavailable(RuntimeError):
    """A configured stage cannot run here (missing package or weights); the message says what to provide."""


@dataclass
class Resources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class StageTimer:
    seconds: float = 0.0
    windows: int = 0
    videos: int = 0
    oom_halvings: int = 0
    """Times a call ran out of GPU memory and was retried with half the batch."""


def is_out_of_memory(e: BaseException) -> bool:
    """A GPU out-of-memory error: `torch.cuda.OutOfMemoryError`, or a RuntimeError saying CUDA ran out of memory
    (older torch, CUDA errors raised from extensions). Checked by name so the stage base needs no torch import."""
    if any(c.__name__ == "OutOfMemoryError" and c.__module__.startswith("torch") for c in type(e).__mro__):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower() and "cuda" in str(e).lower()


def _free_gpu_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Stage:
    """Base class. Subclasses are dataclasses whose fields are their parameters (paper names)."""

    name: ClassVar[str] = ""
    columns: ClassVar[tuple[str, ...]] = ()
    needs_model: ClassVar[bool] = False
    """True: heavy model loaded in `setup()`, run on an actor pool; False: runs inline after decoding."""
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(python module, what to install) pairs checked when the stage is built."""

    resources: Resources = field(default_factory=Resources)
    random_weights: bool = field(default=False, init=False)
    """Set by model stages that run with random-init weights: their scores are not meaningful."""

    # -- lifecycle --------------------------------------------------------------------------------
    def check(self) -> None:
        """Fail early (at build time, on the driver) if the stage cannot run; say what to install."""
        for module, hint in self.requires:
            try:
                importlib.import_module(module)
            except Exception as e:  # ImportError or a broken dependency of it
                raise StageUnavailable(f"stage '{self.name}' needs `{module}` ({hint}): {e}") from None

    def setup(self) -> None:
        """Load models; called once per worker before the first `score`."""

    # -- work -------------------------------------------------------------------------------------
    def score(self, video: DecodedVideo, windows: Sequence[Window]) -> dict[str, np.ndarray]:
        """Scores of `windows` of one decoded video: {column: array [len(windows)]}."""
        raise NotImplementedError

    def score_batch(self, items: Sequence[tuple[DecodedVideo, Sequence[Window]]]) -> list[dict[str, np.ndarray]]:
        """Scores for several videos at once; model stages override this to batch across videos."""
        return [self.score(v, ws) for v, ws in items]

    def decide(self, scores: dict[str, float | None]) -> str | None:
        """The drop reason for a window with these scores, or None to keep it."""
        raise NotImplementedError

    # -- bookkeeping (not overridden) -------------------------------------------------------------
    def run(self, items: Sequence[tuple[DecodedVideo, Sequence[Window]]], timer: StageTimer | None = None) -> None:
        """Score, write scores into the windows (NaN -> None), and time the call.

        Out of GPU memory, the call is retried with half the batch (the stage's `batch_size`, when it has one,
        and the windows of the call, in halves), down to one window before the error is raised."""
        t0 = time.perf_counter()
        todo = [(v, list(ws)) for v, ws in items if len(ws)]
        if todo:
            self._score_halving(todo, timer)
        if timer is not None:
            timer.seconds += time.perf_counter() - t0
            timer.windows += sum(len(ws) for _, ws in todo)
            timer.videos += len(items)

    def _score_halving(self, todo: list[tuple[DecodedVideo, list[Window]]], timer: StageTimer | None) -> None:
        saved = getattr(self, "batch_size", None)
        has_size = isinstance(saved, int) and not isinstance(saved, bool)
        size = sum(len(ws) for _, ws in todo)
        if has_size:
            size = min(size, saved)
        pending = [todo]
        try:
            while pending:
                chunk = pending.pop(0)
                try:
                    results = self.score_batch(chunk)
                except Exception as e:
                    cur = min(size, sum(len(ws) for _, ws in chunk))
                    if not is_out_of_memory(e) or cur <= 1:
                        raise
                    size = cur // 2  # this call's batch from now on, the chunk that failed and the rest
                    if has_size:
                        self.batch_size = size
                    if timer is not None:
                        timer.oom_halvings += 1
                    _free_gpu_cache()
                    pending = list(_chunks([pair for c in [chunk, *pending] for pair in c], size))
                    continue
                self._store(chunk, results)
        finally:
            if has_size:
                self.batch_size = saved

    def _store(self, todo, results) -> None:
        for (_, ws), res in zip(todo, results):
            for col in self.columns:
                vals = np.asarray(res[col], dtype=np.float64).reshape(-1)
                if vals.shape[0] != len(ws):
                    raise RuntimeError(f"stage {self.name} returned {vals.shape[0]} {col} scores for {len(ws)} windows")
                for w, x in zip(ws, vals):
                    w.scores[col] = None if not np.isfinite(x) else float(x)

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("resources", "random_weights")}


def _chunks(todo: list[tuple[DecodedVideo, list[Window]]], size: int):
    """(video, windows) pairs regrouped into calls of at most `size` windows (a video may be split)."""
    cur: list[tuple[DecodedVideo, list[Window]]] = []
    n = 0
    for v, ws in todo:
        i = 0
        while i < len(ws):
            take = ws[i : i + size - n]
            cur.append((v, take))
            n += len(take)
            i += len(take)
            if n == size:
                yield cur
                cur, n = [], 0
    if cur:
        yield cur


def in_range(x: float | None, lo: float | None, hi: float | None, name: str) -> str | None:
    """Inclusive range rule used by every threshold filter (the paper's `lo <= x <= hi`)."""
    if x is None:
        return f"{name}_missing"
    if lo is not None and x < lo:
        return f"{name}_low"
    if hi is not None and x > hi:
        return f"{name}_high"
    return None


# ------------------------------------------------------------------------------------------ registry

STAGE_REGISTRY: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    STAGE_REGISTRY[cls.name] = cls
    return cls


def build_stage(name: str, params: dict | None = None) -> Stage:
    _import_builtin_stages()
    if name not in STAGE_REGISTRY:
        raise ValueError(f"unknown stage {name!r}; known: {sorted(STAGE_REGISTRY)}")
    cls = STAGE_REGISTRY[name]
    params = dict(params or {})
    res = params.pop("resources", None)
    params.pop("actors", None)  # runner setting (actor pool size), not a stage parameter
    valid = {f.name for f in fields(cls) if f.init}
    unknown = set(params) - valid
    if unknown:
        raise ValueError(f"stage {name!r} has no parameter(s) {sorted(unknown)}; parameters: {sorted(valid - {'resources'})}")
    stage = cls(**params)
    if res:
        stage.resources = Resources(**res) if isinstance(res, dict) else res
    return stage


def all_columns() -> list[str]:
    """Every score column of every known stage, in registry order (the manifest's fixed schema)."""
    _import_builtin_stages()
    cols: list[str] = []
    for cls in STAGE_REGISTRY.values():
        cols.extend(c for c in cls.columns if c not in cols)
    return cols


def _import_builtin_stages() -> None:
    importlib.import_module("curate.filters")
