"""Run the curation: build stages, discover inputs, process every unfinished video, finalize.

The per-video chain is the same for both runners: `local` runs it in this process (debugging, tiny
sets); `ray` (default) runs it on a Ray cluster through `curate.ray_runner`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from common.cli import UsageError
from media import storage
from curate.config import CurateConfig
from curate.finalize import RunResult, finalize
from curate.inputs import ClassAllowList, InputDecision, discover
from curate.stage import Stage, build_stage
from curate.video_task import WorkDir, decode_and_window, finish_video, record_input_only, run_stages

log = logging.getLogger("curate")


def build_stages(cfg: CurateConfig, check: bool = True) -> list[Stage]:
    """Build and check every configured stage (fails early, on the driver, with what to provide).

    `check=False` builds the stages for their thresholds only (refilter: no model is needed)."""
    stages = []
    for name in cfg.stages:
        params = dict(cfg.stage_params.get(name) or {})
        stage = build_stage(name, params)
        if hasattr(stage, "allow_random_weights") and "allow_random_weights" not in params:
            stage.allow_random_weights = cfg.allow_random_weights
        if check:
            stage.check()
        stages.append(stage)
    extra = set(cfg.stage_params) - set(cfg.stages)
    for name in sorted(extra):
        build_stage(name, cfg.stage_params[name])  # validate parameters of stages configured but not run
    return stages


@dataclass
class Plan:
    inputs: list[InputDecision]
    todo: list[InputDecision]
    done: int
    stages: list[Stage]
    balance_min: int = 0
    retried: int = 0
    """Of `todo`, inputs that failed in an earlier run and are tried again."""

    def describe(self) -> str:
        lines = [f"inputs: {len(self.inputs)}  already done: {self.done}  to process: {len(self.todo)}"
                 + (f" ({self.retried} failed before, tried again)" if self.retried else "")]
        if self.balance_min:
            lines.append(f"class balance: classes with fewer than {self.balance_min} merged segments are dropped "
                         "(balance.min_segments_per_class; 0 disables)")
        else:
            lines.append("class balance: off (balance.min_segments_per_class=0)")
        pre = sum(1 for d in self.inputs if d.reason)
        if pre:
            lines.append(f"dropped before decoding (class allow-list / CSV): {pre}")
        lines.append("stages: decode -> scenes -> windows -> " + " -> ".join(
            f"{s.name}({', '.join(f'{k}={v}' for k, v in s.params().items())})"
            + (" [model, actor pool]" if s.needs_model else "") for s in self.stages) + " -> merge -> balance -> shards")
        for d in self.todo[:20]:
            lines.append(f"  {d.inp.video_id}  {d.inp.label or '-'}  {d.inp.path}" + (f"  (drop: {d.reason})" if d.reason else ""))
        if len(self.todo) > 20:
            lines.append(f"  ... {len(self.todo) - 20} more")
        return "\n".join(lines)


def _check_fingerprint(cfg: CurateConfig, work: WorkDir) -> None:
    fp = storage.join(work.root, "settings.json")
    cur = json.dumps(cfg.fingerprint_dict(), sort_keys=True, default=str)
    if storage.is_file(fp):
        if storage.read_text(fp) != cur:
            raise UsageError(
                f"{cfg.out} holds results made with other settings (decode/scenes/windows/stages/params). "
                "Use a new --out, delete it, or re-apply thresholds with `python -m pipelines.refilter`."
            )
    else:
        storage.write_bytes(fp, cur.encode())
    storage.write_bytes(storage.join(work.root, "config.json"),
                        json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str).encode())


def plan_run(cfg: CurateConfig, stages: list[Stage] | None = None) -> Plan:
    """What a run would do. Inputs that cannot produce anything (no video under --src, a CSV naming none of
    them, an allow-list matching none of their labels) are a `UsageError` here, before any work starts."""
    if not cfg.src:
        raise UsageError("--src is required (a folder of videos, or one video file)")
    try:
        if not storage.exists(cfg.src):
            raise UsageError(f"--src {cfg.src!r} does not exist")
    except (OSError, ImportError, ValueError) as e:  # no such bucket, no credentials, no fsspec backend
        raise UsageError(f"--src {cfg.src!r} cannot be read: {type(e).__name__}: {e}") from None
    try:
        allow = ClassAllowList.from_file(cfg.classes) if cfg.classes else None
        inputs = discover(cfg.src, cfg.extensions, cfg.csv, allow)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    if cfg.limit is not None:
        inputs = inputs[: cfg.limit]
    if not inputs:
        raise UsageError(f"no video files under --src {cfg.src!r} (extensions: {' '.join(cfg.extensions)}; "
                         "set extensions=... to add others)")
    reasons = Counter(d.reason for d in inputs)
    if reasons.get(None, 0) == 0:
        why = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        hint = ""
        if "not in CSV" in reasons:
            hint = " (file names must be <youtube_id>_<start:06d>.<ext> and appear in --csv)"
        elif "label not in class allow-list" in reasons:
            hint = f" (labels must match --classes {cfg.classes})"
        raise UsageError(f"none of the {len(inputs)} inputs under --src {cfg.src!r} can be curated: {why}{hint}")
    try:
        finished = WorkDir(cfg.out).read_statuses()
    except (OSError, ImportError, ValueError) as e:  # no such bucket, no credentials, no fsspec backend
        raise UsageError(f"--out {cfg.out!r} cannot be read: {type(e).__name__}: {e}") from None
    todo = [d for d in inputs if d.inp.video_id not in finished or _retry(finished[d.inp.video_id], cfg)]
    retried = sum(1 for d in todo if d.inp.video_id in finished)
    return Plan(inputs, todo, len(inputs) - len(todo), stages if stages is not None else build_stages(cfg),
                cfg.balance.min_segments_per_class, retried)


def _retry(status: dict, cfg: CurateConfig) -> bool:
    """A finished video is processed again when it failed for a transient reason, or failed at all with
    `retry_failed`."""
    return status["status"] == "failed" and (cfg.retry_failed or bool(status.get("retryable")))


def run(cfg: CurateConfig, progress: bool = True, on_video: Callable[[dict], None] | None = None) -> RunResult:
    """The whole curation: per-video work for unfinished videos, then `finalize`."""
    t0 = time.perf_counter()
    stages = build_stages(cfg)
    plan = plan_run(cfg, stages)
    if cfg.runner.kind == "ray":
        from curate.ray_runner import check_nodes

        check_nodes(cfg)  # every node sees --src and can write --out, before anything is written
    work = WorkDir(cfg.out)
    try:
        _check_fingerprint(cfg, work)
    except (OSError, ImportError) as e:
        raise UsageError(f"--out {cfg.out!r} cannot be written: {type(e).__name__}: {e}") from None
    work.remove_leftovers()  # temporary files of a killed run (never a finished result)
    for d in plan.todo:
        if d.reason:
            record_input_only(d.inp, d.reason, cfg, work)
    todo = [d.inp for d in plan.todo if not d.reason]
    bar = _progress(len(todo), progress)
    progress_ = RunProgress(bar, on_video)

    if cfg.runner.kind == "local":
        for s in stages:
            s.setup()
        for inp in todo:
            item = run_stages([decode_and_window(inp, cfg)], stages, cfg.cascade)[0]
            progress_.done(finish_video(item, cfg, stages, work))
    elif cfg.runner.kind == "ray":
        from curate.ray_runner import run_on_ray

        run_on_ray(cfg, stages, todo, progress_)
    else:
        raise ValueError(f"unknown runner {cfg.runner.kind!r} (ray, local)")
    if bar is not None:
        bar.close()
    return finalize(cfg, stages, run_seconds=time.perf_counter() - t0, faults=progress_.faults(), report=cfg.report)


class RunProgress:
    """What the run has done so far, for the progress bar and `stats.json`: videos and their outcome, stage
    throughput (windows per second of each stage's own time), actor restarts and retried videos."""

    def __init__(self, bar=None, on_video: Callable[[dict], None] | None = None):
        self.bar, self.on_video = bar, on_video
        self.t0 = time.perf_counter()
        self.counts = Counter()
        self.stage_time: dict[str, list[float]] = {}
        self.actor_restarts = 0
        self.retries = 0
        self.retry_reasons: Counter = Counter()

    def done(self, res: dict) -> None:
        c = self.counts
        c["videos"] += 1
        c["windows"] += res["windows"]
        c["kept"] += res["kept"]
        c["failed"] += res["status"] == "failed"
        for k, (sec, n) in (res.get("timers") or {}).items():
            t = self.stage_time.setdefault(k, [0.0, 0])
            t[0] += sec
            t[1] += n
        self._show(1)
        if self.on_video is not None:
            self.on_video(res)

    def retry(self, reason: str) -> None:
        self.retries += 1
        self.retry_reasons[reason] += 1
        self._show(0)

    def restart(self) -> None:
        self.actor_restarts += 1
        self._show(0)

    def _show(self, n: int) -> None:
        if self.bar is None:
            return
        self.bar.update(n)
        post = {"kept": self.counts["kept"], "failed": self.counts["failed"]}
        if self.retries or self.actor_restarts:
            post.update(retries=self.retries, restarts=self.actor_restarts)
        rates = [f"{k} {n / s:.0f}" for k, (s, n) in self.stage_time.items() if n and s]
        if rates:
            post["win/s"] = " ".join(rates)
        self.bar.set_postfix(post, refresh=False)

    def faults(self) -> dict:
        elapsed = time.perf_counter() - self.t0
        return {"actor_restarts": self.actor_restarts, "retries": self.retries,
                "retry_reasons": dict(self.retry_reasons),
                "videos_per_s": round(self.counts["videos"] / elapsed, 3) if elapsed else None}


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="video", desc="curate", dynamic_ncols=True)


def empty_reason(stats: dict) -> str | None:
    """Why a finished run kept no segment (None when it kept some), in words a user can act on."""
    if stats["segments"]["kept"]:
        return None
    v, w = stats["videos"], stats["windows"]
    if not v["ok"]:
        parts = [f"{n} failed ({e})" for e, n in v["failed_by_error"].items()]
        parts += [f"{n} dropped ({r})" for r, n in v["dropped_by_reason"].items()]
        return f"no input could be used: {', '.join(parts) or 'no inputs'} (see inputs.parquet)"
    if not w["kept"]:
        drops = "; ".join(f"{s['name']}: {', '.join(f'{k} {n}' for k, n in s['dropped'].items())}"
                          for s in stats["stages"] if s["run"] and s["dropped"])
        return f"every one of the {w['total']} windows was dropped by the filters ({drops or 'no windows'})"
    cls = stats["classes"]
    if cls["dropped"] and not cls["after"]:
        largest = max(cls["before"].values()) if cls["before"] else 0
        return (f"class balance dropped every class: {len(cls['dropped'])} class(es) had fewer than "
                f"{cls['min_segments_per_class']} merged segments (largest: {largest}); lower "
                "balance.min_segments_per_class (--min-segments-per-class, 0 disables)")
    return "no segment was kept (see segments.parquet)"
