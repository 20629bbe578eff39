"""Curation configuration: dataclasses, loaded from YAML/JSON with dotted `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import (ConfigError, build, convert, deep_merge, field_types, parse_overrides,
                           read_config_file, set_dotted, unknown_key_message)
from media.decode import DecodeConfig
from curate.scenes import SceneConfig
from curate.windows import WindowConfig

PAPER_STAGES = ["pixel_diff", "clip_diff", "amplitude", "imagebind", "psync"]
WEIGHT_FREE_STAGES = ["pixel_diff", "amplitude"]


@dataclass
class BalanceConfig:
    min_segments_per_class: int = 100
    """AVSync-AC: classes with fewer merged segments are dropped (0 disables)."""


@dataclass
class ShardConfig:
    samples_per_shard: int = 256
    test_fraction: float = 0.1
    """Share of videos (by a hash of the video id) put in the `test` split when the CSV gives no split."""
    crf: int = 18
    preset: str = "superfast"
    """x264 preset of the segment videos (superfast: ~1.4x faster than veryfast, ~10 % larger files)."""


@dataclass
class RunnerConfig:
    kind: str = "ray"
    """`ray` (embedded local cluster, or `address`) or `local` (in-process, sequential; for debugging)."""
    address: str | None = None
    num_cpus: int | None = None
    """CPUs of the embedded cluster (default: all)."""
    decode_cpus: float = 1.0
    """CPUs reserved per decode task."""
    max_in_flight: int = 0
    """Videos in flight at once (0 = 2 x CPUs); bounds memory independently of the number of videos."""
    model_batch_videos: int = 4
    """Videos grouped into one model-stage call (clips are batched across them)."""
    max_attempts: int = 3
    """Times a video is started before it is `failed` when its worker, actor or node dies (or its storage
    errs) under it; a decode error is deterministic and never retried."""
    actor_max_restarts: int = -1
    """Restarts of a model actor whose process dies (-1: always; each death also costs the videos in flight
    on it one attempt, so a crash that repeats still ends)."""
    actor_wait_s: float = 900.0
    """Longest wait for a model stage with no live actor (all restarting, or no node left that fits one)
    before the videos left are recorded as failed (retryable: a rerun on a healed cluster takes them)."""
    probe_nodes: bool = True
    """On a multi-node cluster, check from every node that it sees --src and can write --out before any work."""


@dataclass
class CurateConfig:
    src: str = ""
    out: str = "out"
    csv: str | None = None
    """VGGSound-format CSV (youtube_id, start_seconds, label, split); default: label = parent folder name."""
    classes: str | None = None
    """Class allow-list file (one class per line), the 'preliminary curation'."""
    limit: int | None = None
    extensions: list[str] = field(default_factory=lambda: [".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"])
    stages: list[str] = field(default_factory=lambda: list(WEIGHT_FREE_STAGES))
    """Filter stages in order. Stages not listed are recorded as not run (null scores)."""
    stage_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-stage parameters, e.g. {'pixel_diff': {'min': 0.01, 'max': 0.15}}."""
    cascade: bool = False
    """True: a stage only scores windows that every earlier stage kept (faster; refilter can only tighten).
    False (default): every window gets every score, as the paper's analysis needs."""
    allow_random_weights: bool = False
    score_only: bool = False
    """Score and write the manifests, but neither encode segments nor write shards (threshold studies;
    `pipelines.refilter` later writes the shards, cutting segments from the sources)."""
    report: bool = True
    """Write `report.html` at the end of the run."""
    retry_failed: bool = False
    """Resume: process again every input that failed (by default only those that failed for a transient
    reason: a crash, a lost node, a storage error)."""
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    scenes: SceneConfig = field(default_factory=SceneConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint_dict(self) -> dict:
        """The settings that change per-video results (a rerun with other settings must not reuse them)."""
        d = self.to_dict()
        return {k: d[k] for k in ("decode", "scenes", "windows", "stages", "stage_params", "cascade", "csv", "classes")}


def _stage_registry() -> dict:
    from curate.stage import STAGE_REGISTRY, _import_builtin_stages

    _import_builtin_stages()
    return STAGE_REGISTRY


def _check_stage_params(stage_params: dict, stages: list[str]) -> dict:
    """Every stage name known, every parameter known to its stage and of its declared type."""
    from curate.stage import Resources

    registry = _stage_registry()
    for name in stages:
        if name not in registry:
            raise ConfigError(unknown_key_message(name, registry, what="stage"))
    out: dict[str, dict[str, Any]] = {}
    for name, params in stage_params.items():
        if name not in registry:
            raise ConfigError(unknown_key_message(name, registry, what="stage"))
        cls = registry[name]
        hints = field_types(cls)
        valid = {f.name for f in dataclasses.fields(cls) if f.init}
        checked: dict[str, Any] = {}
        for k, v in (params or {}).items():
            key = f"{name}.{k}"
            if k == "actors":  # runner setting (actor pool size), kept with the stage's settings
                checked[k] = convert(v, int, key)
            elif k == "resources":
                checked[k] = convert(v, Resources, key) if isinstance(v, dict) else v
                if isinstance(checked[k], Resources):
                    checked[k] = dataclasses.asdict(checked[k])
            elif k in valid:
                checked[k] = convert(v, hints[k], key)
            else:
                raise ConfigError(unknown_key_message(key, sorted(valid | {"actors"}), what="parameter", where=f" of stage {name!r}"))
        out[name] = checked
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None,
                **explicit: Any) -> CurateConfig:
    """Defaults <- `base` (a saved config dict) <- config file <- explicit keyword values <- `key=value`
    overrides (dotted keys). Every value is checked against its declared type here, before anything runs;
    a mistake is a `ConfigError` (an unknown name suggests the closest stage or setting).

    A top-level key naming a stage (e.g. `pixel_diff: {min: 0.02}` or `pixel_diff.min=0.02`) is a
    shorthand for `stage_params.<stage>`.
    """
    data: dict[str, Any] = json.loads(json.dumps(base)) if base else {}
    if path:
        deep_merge(data, read_config_file(path))
    for k, v in explicit.items():
        if v is not None:
            set_dotted(data, k, v)
    deep_merge(data, parse_overrides(overrides or []))
    registry = _stage_registry()
    sp = data.get("stage_params") or {}
    if not isinstance(sp, dict):
        raise ConfigError(f"stage_params={sp!r}: expected a mapping of stage -> parameters")
    data["stage_params"] = sp
    settings = {f.name for f in dataclasses.fields(CurateConfig)}
    for k in list(data):
        if k in registry:
            params = data.pop(k) or {}
            if not isinstance(params, dict):
                raise ConfigError(f"{k}={params!r}: a stage takes parameters, e.g. {k}.min=0.02")
            sp.setdefault(k, {}).update(params)
        elif k not in settings:
            raise ConfigError(unknown_key_message(k, sorted(settings | set(registry)), what="setting or stage"))
    if isinstance(data.get("stages"), str):
        data["stages"] = [s.strip() for s in data["stages"].split(",") if s.strip()]
    cfg = build(CurateConfig, data)
    cfg.stage_params = _check_stage_params(cfg.stage_params, cfg.stages)
    if not cfg.stages:
        raise ConfigError("stages is empty: name at least one filter stage")
    if cfg.runner.max_attempts < 1:
        raise ConfigError(f"runner.max_attempts={cfg.runner.max_attempts}: expected at least 1")
    if cfg.runner.kind not in ("ray", "local"):
        raise ConfigError(f"runner.kind={cfg.runner.kind!r}: expected 'ray' or 'local'")
    return cfg
