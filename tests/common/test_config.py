"""The shared configuration mechanism: typed conversion, precedence, unknown keys, attribute docs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from common.config import ConfigError, build, describe, field_docs, load, parse_overrides


@dataclass
class Inner:
    size: int = 4
    """Edge length in pixels."""
    scale: float = 1.0


@dataclass
class Outer:
    name: str = "x"
    steps: int | None = None
    """Stop after this many steps (None: never)."""
    lr: float = 1e-3
    flag: bool = False
    tags: list[str] = field(default_factory=list)
    dims: tuple[int, ...] = (1, 2)
    mode: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    extra: dict = field(default_factory=dict)


def test_values_are_converted_by_declared_type():
    cfg = load(Outer, overrides=["steps=10", "lr=2e-4", "flag=yes", "tags=a,b", "dims=[3, 4]", "inner.scale=2",
                                 "mode=b", "name=123", "extra.k=1"])
    assert cfg.steps == 10 and isinstance(cfg.steps, int)
    assert cfg.lr == pytest.approx(2e-4) and cfg.flag is True and cfg.tags == ["a", "b"]
    assert cfg.dims == (3, 4) and isinstance(cfg.inner.scale, float) and cfg.mode == "b" and cfg.name == "123"
    assert cfg.extra == {"k": 1}
    assert load(Outer, overrides=["steps=null"]).steps is None


@pytest.mark.parametrize("item, message", [
    ("steps=abc", "steps='abc': expected an integer or null"),
    ("lr=fast", "lr='fast': expected a number"),
    ("flag=maybe", "flag='maybe': expected true or false"),
    ("steps=1.5", "expected an integer"),
    ("mode=c", "expected one of 'a', 'b'"),
    ("inner.size=[1]", "inner.size=[1]: expected an integer"),
    ("inner=3", "expected a mapping of Inner settings"),
])
def test_wrong_types_are_one_clear_error(item, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(Outer, overrides=[item])


def test_unknown_keys_name_the_closest_known_one():
    with pytest.raises(ConfigError, match=r"unknown setting 'inner.sise' \(did you mean 'inner.size'\?\)"):
        load(Outer, overrides=["inner.sise=3"])
    with pytest.raises(ConfigError, match="unknown setting 'zzz'; known: dims, extra"):
        load(Outer, overrides=["zzz=1"])


def test_precedence_base_file_explicit_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.5\nsteps: 3\ninner: {size: 9}\n")
    cfg = load(Outer, path=f, base={"lr": 0.1, "name": "base"}, explicit={"steps": 5, "name": None},
               overrides=["inner.scale=3"])
    assert (cfg.lr, cfg.steps, cfg.name, cfg.inner.size, cfg.inner.scale) == (0.5, 5, "base", 9, 3.0)


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(Outer, path=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load(Outer, path=bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load(Outer, path=broken)
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_overrides(["steps"])


def test_attribute_docstrings_feed_help():
    docs = field_docs(Outer)
    assert docs["steps"].startswith("Stop after this many steps")
    rows = {k: (t, d, doc) for k, t, d, doc in describe(Outer)}
    assert rows["inner.size"] == ("an integer", 4, "Edge length in pixels.")
    assert build(Inner, {"size": "7"}).size == 7
