"""The shipped class lists against the full VGGSound label list: `--classes avsync15` keeps all 15 AVSync15
classes (two of them merge VGGSound classes), `--classes vggss` all 149 VGGSS classes, nothing else."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from curate.inputs import ClassAllowList, discover, normalise_label

LABELS = Path(__file__).resolve().parents[2] / "curate" / "classes" / "vggsound_labels.txt"


def vggsound_labels() -> list[str]:
    return [x for x in LABELS.read_text().splitlines() if x and not x.startswith("#")]


def mapping(allow: ClassAllowList) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for label in vggsound_labels():
        cls = allow.match(label)
        if cls is not None:
            out[cls].add(label)
    return dict(out)


def test_vggsound_label_list_is_complete():
    labels = vggsound_labels()
    assert len(labels) == len(set(labels)) == 309
    assert {"baby babbling", "baby crying", "hammering nails", "eletric blender running"} <= set(labels)


def test_avsync15_keeps_all_15_classes_on_vggsound_labels():
    allow = ClassAllowList.from_file("avsync15")
    got = mapping(allow)
    assert set(got) == set(allow.classes) and len(got) == 15
    assert got.pop("baby babbling crying") == {"baby babbling", "baby crying"}
    assert got.pop("hammering") == {"hammering nails"}
    assert got.pop("playing violin fiddle") == {"playing violin, fiddle"}
    assert all(labels == {cls} for cls, labels in got.items()), got  # the 12 others: their own label only


def test_vggss_keeps_all_149_classes_each_from_its_own_label():
    allow = ClassAllowList.from_file("vggss")
    got = mapping(allow)
    assert len(got) == len(allow.classes) == 149
    same = {c: {normalise_label(x) for x in l} == {normalise_label(c)} for c, l in got.items()}
    assert all(same.values()), {c: got[c] for c, ok in same.items() if not ok}  # each from its own label only
    # a distinct VGGSound class is never taken for a spelling variant of a listed one
    assert allow.match("chopping wood") is None and allow.match("chopping  Food") == "chopping food"


def test_csv_labels_become_avsync15_class_names(tmp_path):
    src = tmp_path / "vids"
    src.mkdir()
    rows = {"aaaaaaaaaaa": "baby crying", "bbbbbbbbbbb": "baby babbling", "ccccccccccc": "hammering nails",
            "ddddddddddd": "dog barking", "eeeeeeeeeee": "cat purring"}
    for yid in rows:
        (src / f"{yid}_000010.mp4").write_bytes(b"x")
    csv = tmp_path / "vggsound.csv"
    csv.write_text("".join(f'{yid},10,"{label}",train\n' for yid, label in rows.items()))
    got = {d.inp.video_id[:11]: d for d in discover(src, [".mp4"], csv, ClassAllowList.from_file("avsync15"))}
    assert got["aaaaaaaaaaa"].inp.label == got["bbbbbbbbbbb"].inp.label == "baby babbling crying"
    assert got["ccccccccccc"].inp.label == "hammering"
    assert got["ddddddddddd"].inp.label == "dog barking" and got["ddddddddddd"].reason is None
    assert got["eeeeeeeeeee"].reason == "label not in class allow-list"


def test_mapping_lines_in_a_user_class_file(tmp_path):
    f = tmp_path / "classes.txt"
    f.write_text("# my classes\nbirds <- bird chirping, tweeting | bird squawking\ndog barking\n")
    allow = ClassAllowList.from_file(f)
    assert allow.classes == ["birds", "dog barking"]
    assert mapping(allow) == {"birds": {"bird chirping, tweeting", "bird squawking"}, "dog barking": {"dog barking"}}
