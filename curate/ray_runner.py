"""The one adapter between stages and Ray.

Per video: a decode task (decode once, scenes, windows, and every weight-free stage up to the first model
stage) -> for each model stage, an actor pool (model loaded once per actor; several videos per call so
clips batch across videos) -> weight-free stages that follow -> a finish task (decisions, staged segment
media, per-video results). The driver keeps at most `max_in_flight` videos in flight, so memory does not
grow with the number of videos; object refs chain the steps without round trips through the driver.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Callable, Sequence

from curate.config import CurateConfig
from curate.records import VideoInput
from curate.stage import Stage
from curate.video_task import VideoItem, WorkDir, decode_and_window, finish_video, run_stage_on_items, run_stages

log = logging.getLogger("curate")


def _chain_plan(stages: Sequence[Stage]) -> list[tuple[str, list[Stage]]]:
    """Group stages into steps: consecutive weight-free stages run inline in one task; model stages alone."""
    steps: list[tuple[str, list[Stage]]] = []
    for s in stages:
        if s.needs_model:
            steps.append(("model", [s]))
        elif steps and steps[-1][0] == "cpu":
            steps[-1][1].append(s)
        else:
            steps.append(("cpu", [s]))
    return steps


class StageActor:
    """Hosts one model stage: `setup()` once, then scores groups of videos."""

    def __init__(self, stage: Stage, cascade: bool):
        import torch

        threads = max(1, int(round(stage.resources.num_cpus)))
        torch.set_num_threads(threads)
        self.stage, self.cascade = stage, cascade
        stage.setup()

    def process(self, *items: VideoItem):
        run_stage_on_items(self.stage, list(items), self.cascade)
        return items if len(items) > 1 else items[0]


def init_ray(cfg: CurateConfig):
    import ray

    if ray.is_initialized():
        return ray
    kwargs = dict(include_dashboard=False, log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)
    if cfg.runner.address:
        ray.init(address=cfg.runner.address, **kwargs)
    else:
        # Embedded cluster: Ray's default token authentication stays on; only its notice about that default,
        # printed on every run, is dropped (an explicit RAY_AUTH_MODE still governs, as Ray documents).
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
            lambda record: "Token authentication is enabled for this Ray cluster" not in record.getMessage())
        ray.init(num_cpus=cfg.runner.num_cpus or os.cpu_count(), **kwargs)
    return ray


def run_on_ray(cfg: CurateConfig, stages: list[Stage], todo: list[VideoInput], on_done: Callable[[dict], None]) -> None:
    ray = init_ray(cfg)
    work = WorkDir(cfg.out)
    steps = _chain_plan(stages)
    first_cpu = steps[0][1] if steps and steps[0][0] == "cpu" else []
    rest = steps[1:] if first_cpu else steps

    # one actor pool per model stage; CPU shares fitted to the cluster so tasks can always run
    total_cpus = float(ray.cluster_resources().get("CPU", 1.0))
    task_cpus = min(cfg.runner.decode_cpus, max(total_cpus / 2, 0.1))
    plan = []
    for kind, group in rest:
        if kind != "model":
            plan.append(None)
            continue
        s = group[0]
        # the driver may have no GPU while the workers do: give GPU-capable model stages a GPU share
        if ray.cluster_resources().get("GPU", 0) and s.resources.num_gpus == 0 and getattr(s, "device", "cpu") in ("auto", "cuda"):
            s.resources.num_gpus = 0.25
        size = int((cfg.stage_params.get(s.name) or {}).get("actors", 0)) or _default_pool_size(s, ray)
        plan.append((s, size))
    demand = sum(size * s.resources.num_cpus for s, size in filter(None, plan))
    scale = min(1.0, (total_cpus - task_cpus) / demand) if demand else 1.0
    if scale < 1.0:
        log.warning("model actors ask for %.2f of %.0f CPUs; scaling their CPU shares by %.2f so that decode "
                    "tasks (%.2f CPU each) can still be scheduled", demand, total_cpus, scale, task_cpus)
    pools: list[list] = []
    for entry in plan:
        if entry is None:
            pools.append([])
            continue
        s, size = entry
        cls = ray.remote(num_cpus=s.resources.num_cpus * scale, num_gpus=s.resources.num_gpus)(StageActor)
        pools.append([cls.remote(s, cfg.cascade) for _ in range(size)])

    @ray.remote(num_cpus=task_cpus)
    def decode_task(inp: VideoInput, cfg: CurateConfig, cpu_stages: list[Stage]) -> VideoItem:
        item = decode_and_window(inp, cfg)
        return run_stages([item], cpu_stages, cfg.cascade)[0]

    @ray.remote(num_cpus=task_cpus)
    def cpu_task(cfg: CurateConfig, cpu_stages: list[Stage], *items: VideoItem):
        out = run_stages(list(items), cpu_stages, cfg.cascade)
        return out if len(out) > 1 else out[0]

    @ray.remote(num_cpus=task_cpus)
    def finish_task(item: VideoItem, cfg: CurateConfig, stages: list[Stage]) -> dict:
        return finish_video(item, cfg, stages, work)

    @ray.remote(num_cpus=task_cpus)
    def whole_video_task(inp: VideoInput, cfg: CurateConfig, stages: list[Stage]) -> dict:
        # no model stage: one task per video, so the decoded frames never leave the worker
        item = decode_and_window(inp, cfg)
        return finish_video(run_stages([item], stages, cfg.cascade)[0], cfg, stages, work)

    cfg_ref = ray.put(cfg)
    stages_ref = ray.put(stages)
    max_in_flight = cfg.runner.max_in_flight or 2 * int(ray.available_resources().get("CPU", 2) or 2)
    group = max(1, cfg.runner.model_batch_videos)
    queue = deque(todo)
    in_flight: dict = {}
    rr = [0] * len(rest)

    def submit(batch: list[VideoInput]) -> None:
        if not rest:
            for inp in batch:
                in_flight[whole_video_task.remote(inp, cfg_ref, stages_ref)] = inp
            return
        refs = [decode_task.remote(inp, cfg_ref, first_cpu) for inp in batch]
        for si, (kind, group_stages) in enumerate(rest):
            if kind == "model":
                pool = pools[si]
                actor = pool[rr[si] % len(pool)]
                rr[si] += 1
                refs = actor.process.options(num_returns=len(refs)).remote(*refs)
            else:
                refs = cpu_task.options(num_returns=len(refs)).remote(cfg_ref, group_stages, *refs)
            refs = list(refs) if isinstance(refs, list) else [refs]
        for inp, r in zip(batch, refs):
            in_flight[finish_task.remote(r, cfg_ref, stages_ref)] = inp

    while queue or in_flight:
        while queue and len(in_flight) + group <= max(max_in_flight, group):
            batch = [queue.popleft() for _ in range(min(group, len(queue)))]
            submit(batch)
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        for r in ready:
            inp = in_flight.pop(r)
            try:
                on_done(ray.get(r))
            except Exception as e:  # a worker crash (OOM kill, segfault in a decoder): record, go on
                item = VideoItem(inp, status="failed", error=f"worker error: {type(e).__name__}: {str(e)[:500]}")
                on_done(finish_video(item, cfg, stages, work))


def _default_pool_size(stage: Stage, ray) -> int:
    res = ray.cluster_resources()
    if stage.resources.num_gpus > 0:
        return max(1, int(res.get("GPU", 0) / stage.resources.num_gpus))
    return 1
