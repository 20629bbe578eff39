"""Input discovery (CSV labels, folder labels, lenient class allow-list) and config loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.config import load_config
from curate.inputs import ClassAllowList, discover



def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_allow_list_matches_leniently():
    allow = ClassAllowList(["eletric blender running", "dog barking", "playing violin, fiddle"])
    assert allow.match("electric blender running") == "eletric blender running"
    assert allow.match("Dog Barking") == "dog barking"
    assert allow.match("playing violin fiddle") == "playing violin, fiddle"
    assert allow.match("cat purring") is None
    assert allow.match(None) is None


def test_discover_with_headerless_vggsound_csv_and_allow_list(tmp_path):
    src = tmp_path / "vids"
    for name in ("abcdefghijk_000030.mp4", "zyxwvutsrqp_000010.mp4", "nolabelxxxx_000000.mp4", "notes.txt"):
        _touch(src / name)
    csv = tmp_path / "vggsound.csv"
    csv.write_text("abcdefghijk,30,electric blender running,train\nzyxwvutsrqp,10,cat purring,test\n")
    allow = ClassAllowList(["eletric blender running"])
    got = {d.inp.video_id: d for d in discover(src, [".mp4"], csv, allow)}
    assert set(got) == {"abcdefghijk_000030", "zyxwvutsrqp_000010", "nolabelxxxx_000000"}
    a = got["abcdefghijk_000030"]
    assert a.reason is None and a.inp.label == "eletric blender running" and a.inp.split == "train"
    assert got["zyxwvutsrqp_000010"].reason == "label not in class allow-list"
    assert got["nolabelxxxx_000000"].reason == "not in CSV"


def test_discover_labels_from_folder_names_and_unique_ids(tmp_path):
    _touch(tmp_path / "dog_barking" / "clip.mp4")
    _touch(tmp_path / "chicken crowing" / "clip.mp4")
    got = discover(tmp_path, [".mp4"])
    assert sorted(d.inp.label for d in got) == ["chicken crowing", "dog barking"]
    ids = [d.inp.video_id for d in got]
    assert len(set(ids)) == 2 and all("." not in i for i in ids)


def test_the_papers_class_lists_ship_with_the_package():
    allow = ClassAllowList.from_file("vggss")
    assert len(allow.classes) == 149
    assert allow.match("electric blender running") == "eletric blender running"  # the supplement's spelling
    assert len(ClassAllowList.from_file("avsync15").classes) == 15


def test_config_file_explicit_values_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("stages: [pixel_diff, amplitude]\npixel_diff: {min: 0.02}\nshards: {samples_per_shard: 7}\n")
    cfg = load_config(cfg_file, ["pixel_diff.max=0.2", "decode.short_side=128"], src="s", out="o")
    assert cfg.stage_params["pixel_diff"] == {"min": 0.02, "max": 0.2}
    assert cfg.shards.samples_per_shard == 7 and cfg.decode.short_side == 128 and cfg.src == "s"
    with pytest.raises(ValueError, match="unknown setting 'decode.nonsense'"):
        load_config(None, ["decode.nonsense=1"])
    with pytest.raises(ValueError, match="unknown parameter 'pixel_diff.minimum' of stage 'pixel_diff'"):
        load_config(None, ["pixel_diff.minimum=0.1"])
