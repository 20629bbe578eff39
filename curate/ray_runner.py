"""The one adapter between stages and Ray.

Per video: a decode task (decode once, scenes, windows, and every weight-free stage up to the first model
stage) -> for each model stage, an actor pool (model loaded once per actor; several videos per call so
clips batch across videos) -> weight-free stages that follow -> a finish task (decisions, staged segment
media, per-video results). The driver keeps at most `max_in_flight` videos in flight, so memory does not
grow with the number of videos; object refs chain the steps without round trips through the driver.

Faults cost no video. A model actor whose process dies (a GPU out-of-memory kill, a segfault, a lost node)
is restarted by Ray (`runner.actor_max_restarts`); the driver stops sending it work until it answers again,
and sends each video that was in flight on it, or on a dead worker or node, through the chain again, to the
least-loaded live actor, up to `runner.max_attempts` starts. Ray's own retries are off so that every start
is counted and recorded (`attempts`, and `retryable` for a video that still failed, in inputs.parquet).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from common.cli import UsageError
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

    def ping(self) -> bool:
        """Answers once the actor (after a restart: its model) is up."""
        return True

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


def classify_failure(e: BaseException) -> str | None:
    """Why a video's chain failed, when that is transient (a retry may succeed): a dead actor, worker or node,
    a lost result, a worker killed for memory, a storage connection error. None: deterministic (the same input
    fails the same way again; a decode error never even reaches here, it is a per-video result)."""
    import ray.exceptions as rex

    cause = e
    if isinstance(e, rex.RayTaskError) and getattr(e, "cause", None) is not None:
        cause = e.cause
    kinds = [("ActorUnavailableError", "actor restarting"), ("RayActorError", "actor died"),
             ("NodeDiedError", "node died"), ("WorkerCrashedError", "worker crashed"),
             ("LocalRayletDiedError", "node died"), ("OutOfMemoryError", "worker killed for memory"),
             ("ObjectLostError", "result lost with its node"), ("OwnerDiedError", "result lost with its node"),
             ("ObjectFetchTimedOutError", "result lost with its node"), ("RaySystemError", "Ray system error")]
    for name, why in kinds:
        t = getattr(rex, name, None)
        if t is not None and isinstance(cause, t) and not (name == "OutOfMemoryError" and _is_torch_oom(cause)):
            return why
    if isinstance(cause, (ConnectionError, TimeoutError)):
        return "storage or network error"
    if isinstance(cause, OSError) and not isinstance(cause, (FileNotFoundError, PermissionError, IsADirectoryError,
                                                             NotADirectoryError)):
        return "I/O error"
    return None


def _is_torch_oom(e: BaseException) -> bool:
    return type(e).__module__.startswith("torch")


class _ActorPool:
    """The actors of one model stage, how many videos each has in flight, and which are down (died, not yet
    answering again). Work goes to the least-loaded live actor."""

    def __init__(self, make: Callable[[], object], size: int):
        self.make = make
        self.actors = [make() for _ in range(size)]
        self.load = [0] * size
        self.down: dict[int, float] = {}
        """actor index -> time its last ping was sent or failed"""
        self.pings: dict = {}
        """ping ref -> actor index"""
        self.up_at: dict[int, float] = {}
        """actor index -> when it last answered after being down (errors of work sent before are old news)"""

    def pick(self) -> int | None:
        live = [i for i in range(len(self.actors)) if i not in self.down]
        return min(live, key=lambda i: (self.load[i], i)) if live else None

    def index_of(self, actor_id: str | None) -> int | None:
        for i, a in enumerate(self.actors):
            if actor_id and a._actor_id.hex() == actor_id:
                return i
        return None

    def mark_down(self, i: int) -> bool:
        """True when this is news (the actor was up)."""
        if i in self.down:
            return False
        self.down[i] = 0.0
        return True

    def ping_due(self, now: float) -> list[int]:
        pending = set(self.pings.values())
        return [i for i, t in self.down.items() if i not in pending and now - t >= 0.25]


@dataclass
class _Job:
    inp: VideoInput
    attempt: int
    used: list[tuple[int, int]] = field(default_factory=list)
    """(pool index, actor index) of every model call in this video's chain"""
    submitted: float = field(default_factory=time.monotonic)


def check_nodes(cfg: CurateConfig) -> None:
    """On a multi-node cluster, one probe task per node: it must see --src and write --out. A UsageError
    naming the first node that cannot, before any work (results written on a node's own disk would be lost)."""
    if not cfg.runner.probe_nodes:
        return
    ray = init_ray(cfg)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from media import storage

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    token = uuid.uuid4().hex.encode()
    folder = storage.join(cfg.out, "work", "probe")
    token_path = storage.join(folder, token.decode() + ".driver")
    try:
        storage.write_bytes(token_path, token)
    except Exception as e:
        raise UsageError(f"cannot write --out {cfg.out}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    probe = ray.remote(num_cpus=0, max_retries=0)(storage.probe)
    refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
        cfg.src, cfg.out, token_path, token): n for n in nodes}
    written, problems = [token_path], []
    for ref, node in refs.items():  # every answer first, so that every probe file is removed
        try:
            problem, mine = ray.get(ref, timeout=300)
        except Exception as e:
            problem, mine = f"could not run the storage probe: {type(e).__name__}: {str(e).splitlines()[0][:200]}", None
        if mine:
            written.append(mine)
            if not problem and storage.read_many([mine]).get(mine) != token:
                problem = f"writes --out {cfg.out} where the driver does not see it (not shared storage)"
        if problem:
            problems.append((node, problem))
    for p in written:
        storage.remove(p)
    if not storage.is_uri(folder):
        try:
            os.rmdir(folder)
        except OSError:
            pass
    if problems:
        node, problem = problems[0]
        more = f" (and {len(problems) - 1} more nodes)" if len(problems) > 1 else ""
        raise UsageError(
            f"node {node.get('NodeManagerAddress')} ({node['NodeID'][:8]}) {problem}{more}; every node of the "
            f"cluster must see --src and write --out (a shared filesystem or an object-storage URI such as "
            f"s3://bucket/path; runner.probe_nodes=false skips this check)")


def run_on_ray(cfg: CurateConfig, stages: list[Stage], todo: list[VideoInput], progress) -> None:
    """Run every video of `todo` through the chain; `progress.done(result)` for each (also `progress.retry`,
    `progress.restart` for faults; see `curate.runner.RunProgress`)."""
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
    pools: list[_ActorPool | None] = []
    for entry in plan:
        if entry is None:
            pools.append(None)
            continue
        s, size = entry
        cls = ray.remote(num_cpus=s.resources.num_cpus * scale, num_gpus=s.resources.num_gpus,
                         max_restarts=cfg.runner.actor_max_restarts, max_task_retries=0)(StageActor)
        pools.append(_ActorPool(lambda cls=cls, s=s: cls.remote(s, cfg.cascade), size))

    # Ray's own retries are off (max_retries=0): the driver retries, counting every start of a video
    @ray.remote(num_cpus=task_cpus, max_retries=0)
    def decode_task(inp: VideoInput, cfg: CurateConfig, cpu_stages: list[Stage], attempt: int) -> VideoItem:
        item = decode_and_window(inp, cfg)
        item.attempts = attempt
        return run_stages([item], cpu_stages, cfg.cascade)[0]

    @ray.remote(num_cpus=task_cpus, max_retries=0)
    def cpu_task(cfg: CurateConfig, cpu_stages: list[Stage], *items: VideoItem):
        out = run_stages(list(items), cpu_stages, cfg.cascade)
        return out if len(out) > 1 else out[0]

    @ray.remote(num_cpus=task_cpus, max_retries=0)
    def finish_task(item: VideoItem, cfg: CurateConfig, stages: list[Stage]) -> dict:
        return finish_video(item, cfg, stages, work)

    @ray.remote(num_cpus=task_cpus, max_retries=0)
    def whole_video_task(inp: VideoInput, cfg: CurateConfig, stages: list[Stage], attempt: int) -> dict:
        # no model stage: one task per video, so the decoded frames never leave the worker
        item = decode_and_window(inp, cfg)
        item.attempts = attempt
        return finish_video(run_stages([item], stages, cfg.cascade)[0], cfg, stages, work)

    cfg_ref = ray.put(cfg)
    stages_ref = ray.put(stages)
    max_in_flight = cfg.runner.max_in_flight or 2 * int(ray.available_resources().get("CPU", 2) or 2)
    group = max(1, cfg.runner.model_batch_videos)
    queue: deque[tuple[VideoInput, int]] = deque((inp, 1) for inp in todo)
    jobs: dict = {}

    def can_submit() -> bool:
        return all(p is None or p.pick() is not None for p in pools)

    def submit(batch: list[tuple[VideoInput, int]]) -> None:
        if not rest:
            for inp, attempt in batch:
                jobs[whole_video_task.remote(inp, cfg_ref, stages_ref, attempt)] = _Job(inp, attempt)
            return
        new = [_Job(inp, attempt) for inp, attempt in batch]
        refs = [decode_task.remote(inp, cfg_ref, first_cpu, attempt) for inp, attempt in batch]
        for si, (kind, group_stages) in enumerate(rest):
            if kind == "model":
                pool = pools[si]
                ai = pool.pick()
                pool.load[ai] += len(new)
                for j in new:
                    j.used.append((si, ai))
                refs = pool.actors[ai].process.options(num_returns=len(refs)).remote(*refs)
            else:
                refs = cpu_task.options(num_returns=len(refs)).remote(cfg_ref, group_stages, *refs)
            refs = list(refs) if isinstance(refs, list) else [refs]
        for j, r in zip(new, refs):
            jobs[finish_task.remote(r, cfg_ref, stages_ref)] = j

    def release(job: _Job) -> None:
        for si, ai in job.used:
            pools[si].load[ai] -= 1

    def actor_failed(job: _Job, e: BaseException) -> None:
        """Take the actor(s) behind an actor error out of dispatch until they answer again."""
        cause = getattr(e, "cause", None) if isinstance(e, ray.exceptions.RayTaskError) else e
        if not isinstance(cause, ray.exceptions.RayActorError):
            return
        aid = getattr(cause, "actor_id", None)
        hits = [(si, ai) for si, ai in job.used if pools[si].index_of(aid) == ai] or job.used
        for si, ai in hits:
            if job.submitted < pools[si].up_at.get(ai, float("-inf")):
                continue  # sent before the restart it already came back from: the same death, not a new one
            if pools[si].mark_down(ai):
                progress.restart()
                log.warning("model actor %d of stage %s died; it restarts, its videos go to live actors",
                            ai, rest[si][1][0].name)

    def failed(job: _Job, why: str, e: BaseException | None, transient: bool) -> None:
        msg = f"worker error ({why}): {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}" if e else why
        item = VideoItem(job.inp, status="failed", error=msg, attempts=job.attempt, retryable=transient)
        progress.done(finish_video(item, cfg, stages, work))

    def retry_or_fail(job: _Job, why: str, e: BaseException | None) -> None:
        if job.attempt < cfg.runner.max_attempts:
            progress.retry(why)
            queue.appendleft((job.inp, job.attempt + 1))
        else:
            failed(job, f"{why}, after {job.attempt} attempts", e, True)

    def on_ping(pool: _ActorPool, ai: int, ref) -> None:
        try:
            ray.get(ref)
            pool.down.pop(ai, None)
            pool.up_at[ai] = time.monotonic()
        except ray.exceptions.ActorUnavailableError:  # still restarting: ask again shortly
            pool.down[ai] = time.monotonic()
        except ray.exceptions.RayActorError:  # restarts used up: a new actor takes its place
            log.warning("model actor %d could not be restarted; starting a new one", ai)
            pool.actors[ai] = pool.make()
            pool.down[ai] = 0.0
            progress.restart()

    stalled_since: float | None = None
    while queue or jobs:
        if can_submit():
            stalled_since = None
        elif stalled_since is None:
            stalled_since = time.monotonic()
        elif time.monotonic() - stalled_since > cfg.runner.actor_wait_s:
            # no actor of some stage came back (e.g. no node left with its resources): give up on what is left,
            # each video recorded as failed for a transient reason, so a rerun on a healed cluster takes it
            why = f"no live model actor for {cfg.runner.actor_wait_s:.0f} s"
            log.error("%s; the %d videos left are recorded as failed (retryable)", why, len(queue) + len(jobs))
            for job in [*jobs.values(), *(_Job(inp, attempt) for inp, attempt in queue)]:
                failed(job, why, None, True)
            return
        while queue and can_submit() and len(jobs) + group <= max(max_in_flight, group):
            submit([queue.popleft() for _ in range(min(group, len(queue)))])
        now = time.monotonic()
        for pool in filter(None, pools):
            for ai in pool.ping_due(now):
                pool.down[ai] = now
                pool.pings[pool.actors[ai].ping.remote()] = ai
        pings = {r: p for p in filter(None, pools) for r in p.pings}
        waiting = list(jobs) + list(pings)
        if not waiting:
            time.sleep(0.25)  # every actor of a stage is restarting, its next ping is due shortly
            continue
        ready, _ = ray.wait(waiting, num_returns=1, timeout=0.5 if any(p and p.down for p in pools) else None)
        for r in ready:
            if r in pings:
                pool = pings[r]
                on_ping(pool, pool.pings.pop(r), r)
                continue
            job = jobs.pop(r)
            release(job)
            try:
                res = ray.get(r)
            except Exception as e:  # the chain died under the video: a dead actor, worker or node
                why = classify_failure(e)
                actor_failed(job, e)
                if why is None:
                    failed(job, "deterministic", e, False)
                else:
                    retry_or_fail(job, why, e)
                continue
            if res["status"] == "failed" and res.get("retryable") and job.attempt < cfg.runner.max_attempts:
                progress.retry("storage or network error")  # its inputs could not be read: start it again
                queue.appendleft((job.inp, job.attempt + 1))
                continue
            progress.done(res)


def _default_pool_size(stage: Stage, ray) -> int:
    res = ray.cluster_resources()
    if stage.resources.num_gpus > 0:
        return max(1, int(res.get("GPU", 0) / stage.resources.num_gpus))
    return 1
