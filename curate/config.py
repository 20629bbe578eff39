"""Curation configuration: dataclasses, loaded from YAML/JSON with dotted `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curate.media import DecodeConfig
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


def _coerce(value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        if p not in cur or not isinstance(cur[p], dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def _from_dict(cls, data: dict):
    hints = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        if k not in hints:
            raise ValueError(f"unknown config key {k!r} for {cls.__name__}; known: {sorted(hints)}")
        f = hints[k]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default) and isinstance(v, dict):
            v = _from_dict(type(default), v)
        kwargs[k] = v
    return cls(**kwargs)


def _merge(into: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
    return into


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None,
                **explicit: Any) -> CurateConfig:
    """Defaults <- `base` (a saved config dict) <- config file <- explicit keyword values <- `key=value`
    overrides (dotted keys).

    A top-level key naming a stage (e.g. `pixel_diff: {min: 0.02}` or `pixel_diff.min=0.02`) is a
    shorthand for `stage_params.<stage>`.
    """
    data: dict[str, Any] = json.loads(json.dumps(base)) if base else {}
    if path:
        text = Path(path).read_text()
        loaded = (json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config {path} must be a mapping")
        _merge(data, loaded)
    for k, v in explicit.items():
        if v is not None:
            _set_dotted(data, k, v)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        k, v = item.split("=", 1)
        _set_dotted(data, k.strip(), _coerce(v.strip()))
    from curate.stage import STAGE_REGISTRY, _import_builtin_stages

    _import_builtin_stages()
    sp = data.setdefault("stage_params", {})
    for k in list(data):
        if k in STAGE_REGISTRY:
            sp.setdefault(k, {}).update(data.pop(k) or {})
    if isinstance(data.get("stages"), str):
        data["stages"] = [s.strip() for s in data["stages"].split(",") if s.strip()]
    return _from_dict(CurateConfig, data)
