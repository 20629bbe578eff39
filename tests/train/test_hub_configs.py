"""The shipped expert configs (train/configs/paper, train/configs/tiny) against the hub's config.json files.

The hub values are recorded in tests/train/hub_configs.py (sources and less-certain values named there).
With the real folders present (JOINTDIT_VIDEO_MODEL / JOINTDIT_AUDIO_MODEL, or the hub cache), the
recorded table itself is checked against the real files.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest

from tests.train.hub_configs import AUDIOLDM2, HUB, LEGACY_FIELDS, SIZE_FIELDS, SOURCES, SVD

CONFIGS = Path(__file__).resolve().parents[2] / "train" / "configs"


def shipped(preset: str, name: str) -> dict:
    d = json.loads((CONFIGS / preset / f"{name}.json").read_text())
    return {k: v for k, v in d.items() if not k.startswith("_")}


def test_every_shipped_config_is_recorded():
    for preset in ("paper", "tiny"):
        assert sorted(p.stem for p in (CONFIGS / preset).glob("*.json")) == sorted(HUB)


@pytest.mark.parametrize("name", sorted(HUB))
def test_paper_config_equals_the_hub_config_field_by_field(name):
    paper, hub = shipped("paper", name), HUB[name]
    assert sorted(paper) == sorted(hub), f"{name}: fields differ: {set(paper) ^ set(hub)}"
    for k in hub:
        assert paper[k] == hub[k], f"{name}.{k}: shipped {paper[k]!r}, hub {hub[k]!r}"
    assert json.loads((CONFIGS / "paper" / f"{name}.json").read_text())["_class_name"] == SOURCES[name][2]


def test_the_two_values_the_issue_found_wrong():
    assert shipped("paper", "audioldm2_unet")["attention_head_dim"] == 8
    for preset in ("paper", "tiny"):
        assert shipped(preset, "audioldm2_vae")["scaling_factor"] == 0.4110932946205139


@pytest.mark.parametrize("name", sorted(HUB))
def test_tiny_config_shares_every_non_size_field_with_the_paper_config(name):
    paper, tiny = shipped("paper", name), shipped("tiny", name)
    assert sorted(paper) == sorted(tiny), f"{name}: fields differ: {set(paper) ^ set(tiny)}"
    sizes = SIZE_FIELDS[name]
    assert sizes <= set(paper), sizes - set(paper)
    for k, v in paper.items():
        if k not in sizes:
            assert tiny[k] == v, f"{name}.{k}: tiny {tiny[k]!r}, paper {v!r}"
        elif k.endswith("_block_types"):
            assert set(tiny[k]) <= set(v), f"{name}.{k}: tiny uses other block types {tiny[k]}"
        elif k == "cross_attention_dim" and isinstance(v, list):  # widths shrink, the null (self-attn) slots stay
            assert [[d is None for d in blk] for blk in tiny[k]] == [[d is None for d in blk] for blk in v]


def _init_defaults(name: str) -> dict:
    """Constructor arguments of the class (its config class for transformers) and their defaults."""
    cls = SOURCES[name][2]
    if cls in ("CLIPVisionModelWithProjection", "SpeechT5HifiGan"):
        from transformers import CLIPVisionConfig, SpeechT5HifiGanConfig

        c = {"CLIPVisionModelWithProjection": CLIPVisionConfig, "SpeechT5HifiGan": SpeechT5HifiGanConfig}[cls]
    else:
        import diffusers
        from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel

        c = AudioLDM2UNet2DConditionModel if cls == "AudioLDM2UNet2DConditionModel" else getattr(diffusers, cls)
    params = inspect.signature(c.__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "kwargs")}


def _init_fields(name: str) -> set[str]:
    return set(_init_defaults(name))


@pytest.mark.parametrize("name", sorted(HUB))
def test_recorded_fields_are_constructor_arguments(name):
    """A misspelt field would be silently ignored (or swallowed as **kwargs) when a model is built."""
    unknown = set(HUB[name]) - _init_fields(name) - {k for n, k in LEGACY_FIELDS if n == name}
    assert not unknown, f"{name}: not an argument of {SOURCES[name][2]}: {unknown}"


def test_tiny_build_records_the_shipped_values():
    """Building from the shipped tiny configs keeps every value (no renaming or dropping on the way)."""
    from train.experts import build_from_configs

    built = build_from_configs("tiny")
    for name in HUB:
        cfg = built[name].config
        get = (lambda k: getattr(cfg, k)) if not hasattr(cfg, "get") else (lambda k: cfg.get(k))
        for k, v in shipped("tiny", name).items():
            got = get(k)
            got = json.loads(json.dumps(got)) if isinstance(got, (list, tuple)) else got
            assert got == v, (name, k, got, v)


# ----------------------------------------------------------------------- against the real hub files


def local_model(env: str, repo: str) -> str | None:
    """A local diffusers folder: $env, else the hub cache (never downloads); None if absent."""
    path = os.environ.get(env)
    if path:
        return path if Path(path).is_dir() else None
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo, local_files_only=True, allow_patterns=["*.json"])
    except Exception:  # noqa: BLE001 - not cached / no huggingface_hub: absent
        return None


@pytest.mark.parametrize("name", sorted(HUB))
def test_recorded_table_matches_the_real_hub_files(name):
    repo, file, _ = SOURCES[name]
    env = "JOINTDIT_VIDEO_MODEL" if repo == SVD else "JOINTDIT_AUDIO_MODEL"
    root = local_model(env, repo if repo in (SVD, AUDIOLDM2) else "")
    if root is None or not (Path(root) / file).is_file():
        pytest.skip(f"{repo} not on this machine: set {env} to a local diffusers folder to check {file}")
    real = json.loads((Path(root) / file).read_text())
    defaults = _init_defaults(name)
    for k, v in HUB[name].items():
        # a field the (older) writer did not save is loaded with the library default: that must be ours
        hub_value = real[k] if k in real else json.loads(json.dumps(defaults.get(k)))
        assert hub_value == v, f"{name}.{k}: hub {hub_value!r}{'' if k in real else ' (default)'}, recorded {v!r}"
    missed = {k for k in real if k in defaults and k not in HUB[name]}
    assert not missed, f"{name}: hub fields not recorded: {missed}"
