"""The AVSync15 split on a reviewed run of real shard media: layout and formats, accepted-only, whole source
videos per side, exact class balance, determinism, short classes, and the CLI's errors."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.review.store import DecisionStore, ReviewSegment
from media.shards import iter_segments, read_tar_members
from curate.split import split_class
from pipelines.split import main
from tests.curate.review_run import Served, make_run

VIDEOS = {
    "dog barking": {"dog1": 3, "dog2": 1, "dog3": 1, "dog4": 2, "dog5": 1, "dog6": 1},  # 9 kept
    "Hammering": {f"ham{i}": 1 for i in range(8)},  # 8 kept, the run's spelling differs from the list's
    "playing cello": {"cel1": 2, "cel2": 2},  # 4 kept: short
    "wind noise": {"wind1": 3},  # not in the class list
}
REJECT = {"dog4-00004000-00006000", "ham7-00000000-00002000"}


@pytest.fixture(scope="module")
def reviewed_template(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("split") / "run"
    kept = make_run(out, VIDEOS, samples_per_shard=8)
    store = DecisionStore(out)
    for s in kept:
        store.set(s.segment_id, "reject" if s.segment_id in REJECT else "accept", "alice" if "dog" in s.video_id else "bob", s.label)
    return out


@pytest.fixture
def run(reviewed_template, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(reviewed_template, out)
    return out


def lines(p: Path) -> list[str]:
    return p.read_text().splitlines()


ARGS = ["--classes", "dog barking,hammering", "--per-class", "6", "--test-per-class", "2", "--no-progress"]


def test_split_writes_the_avsync15_layout(run, capsys):
    assert main(["--out", str(run), *ARGS]) == 0
    printed = capsys.readouterr().out
    dest = run / "avsync15"
    assert f"dataset saved in {dest}/" in printed
    train, test = lines(dest / "train.txt"), lines(dest / "test.txt")
    assert len(train) == 8 and len(test) == 4
    for line in train + test:
        cls, name = line.split("/")
        assert cls in ("dog_barking", "hammering") and name.endswith(".mp4")
    assert Counter(x.split("/")[0] for x in train) == {"dog_barking": 4, "hammering": 4}
    assert Counter(x.split("/")[0] for x in test) == {"dog_barking": 2, "hammering": 2}
    assert lines(dest / "lists" / "hammering" / "test.txt") == [x for x in test if x.startswith("hammering/")]
    assert json.loads((dest / "class_mapping.json").read_text()) == {"dog_barking": "dog barking", "hammering": "hammering"}

    ids = {x.split("/")[1][:-4] for x in train + test}
    assert not ids & REJECT  # only accepted segments
    man = pq.read_table(dest / "manifest.parquet").to_pylist()
    assert {r["segment_id"] for r in man} == ids
    side = {}
    for r in man:  # no source video on both sides
        assert side.setdefault(r["source_video"], r["split"]) == r["split"], r["video_id"]
    assert {r["reviewer"] for r in man} == {"alice", "bob"}
    assert all(r["class"] in ("dog barking", "hammering") and r["label"] in ("dog barking", "Hammering") for r in man)

    # shards: the run's members copied byte for byte (no re-encoding), metadata restamped, decodable
    run_members = dict(m for t in sorted((run / "shards").glob("*.tar")) for m in read_tar_members(t))
    for split, want in (("train", 8), ("test", 4)):
        tars = sorted((dest / "shards").glob(f"{split}-*.tar"))
        assert [t.name for t in tars] == [f"{split}-000000.tar"]
        members = read_tar_members(tars[0])
        assert len(members) == 3 * want
        for name, data in members:
            if name.endswith(".json"):
                meta = json.loads(data)
                assert meta["split"] == split and meta["avsync15_class"] in ("dog barking", "hammering")
                assert meta["segment_id"] == name[:-5]
            else:
                assert data == run_members[name], name
        samples = list(iter_segments(str(tars[0])))
        assert len(samples) == want
        for smp in samples:
            assert smp.video.frames.shape[1:] == (48, 64, 3) and abs(smp.video.duration - 2.0) < 0.2
            assert smp.video.audio is not None and smp.video.audio_rate == 16000
    for line in train + test:  # the authors' layout: videos/<class>/<segment>.mp4
        assert (dest / "videos" / line).read_bytes() == run_members[line.split("/")[1]]

    card = (dest / "README.md").read_text()
    assert "| dog barking | `dog_barking` | 4 | 2 |" in card and "| hammering | `hammering` | 4 | 2 |" in card
    assert "| **total** | | 8 | 4 |" in card
    assert "licence unknown" in card and "Apache-2.0" in card and "Reviewed by: alice, bob" in card
    for r in man:
        assert f"| `{r['segment_id']}` | `{r['video_id']}` | {r['start']:.2f} | {r['end']:.2f} |" in card
    stats = json.loads((dest / "split.json").read_text())
    assert stats["totals"] == {"train": 8, "test": 4} and stats["settings"]["per_class"] == 6


def test_split_is_deterministic_and_seeded(run, tmp_path):
    def outputs(dest: Path) -> dict[str, bytes]:
        return {str(p.relative_to(dest)): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()
                and p.name != "manifest.parquet"}

    assert main(["--out", str(run), "--dest", str(tmp_path / "a"), *ARGS]) == 0
    # the same inputs in another row order (segments and decisions) give the same dataset
    t = pq.read_table(run / "segments.parquet")
    pq.write_table(t.take(list(reversed(range(t.num_rows)))), run / "segments.parquet")
    r = pq.read_table(run / "review.parquet")
    pq.write_table(r.take(list(reversed(range(r.num_rows)))), run / "review.parquet")
    assert main(["--out", str(run), "--dest", str(tmp_path / "b"), *ARGS]) == 0
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")
    # rerunning into the same folder replaces it
    assert main(["--out", str(run), "--dest", str(tmp_path / "a"), *ARGS]) == 0
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    tests = set()
    for seed in range(6):  # other seeds pick other (equally balanced) test videos
        assert main(["--out", str(run), "--dest", str(tmp_path / f"s{seed}"), "--seed", str(seed), *ARGS]) == 0
        test = lines(tmp_path / f"s{seed}" / "test.txt")
        assert Counter(x.split("/")[0] for x in test) == {"dog_barking": 2, "hammering": 2}
        tests.add(tuple(test))
    assert len(tests) > 1


def test_split_class_whole_videos_and_exact_counts():
    def segs(sizes: list[int]) -> list[ReviewSegment]:
        return [ReviewSegment(f"v{v}-{k}", f"v{v}", "c", "c", "", 4.0 * k, 4.0 * k + 3) for v, n in enumerate(sizes) for k in range(n)]

    rng = random.Random(0)
    for trial in range(200):
        sizes = [rng.choice([1, 1, 1, 2, 3, 5]) for _ in range(rng.randint(2, 12))]
        per_class, n_test = rng.randint(3, 12), rng.randint(1, 3)
        n_test = min(n_test, per_class - 1)
        items = segs(sizes)
        shuffled = items[:]
        rng.shuffle(shuffled)
        p = split_class("c", items, per_class, n_test, seed=trial)
        q = split_class("c", shuffled, per_class, n_test, seed=trial)
        assert [s.segment_id for s in p.train] == [s.segment_id for s in q.train]  # input order does not matter
        assert [s.segment_id for s in p.test] == [s.segment_id for s in q.test]
        assert not {s.video_id for s in p.train} & {s.video_id for s in p.test}
        assert len({s.segment_id for s in p.train + p.test}) == len(p.train) + len(p.test)
        assert len(p.train) + len(p.test) + p.unused == len(items)
        if len(items) >= per_class:
            assert len(p.test) == n_test
            if sum(sizes) - max(sizes) >= per_class:  # enough room whatever video lends to test
                assert len(p.train) == per_class - n_test
    # a video bigger than the test budget lends part of itself; the rest stays out of train
    p = split_class("c", segs([4, 4, 4]), 8, 2, seed=0)
    assert len(p.test) == 2 and len({s.video_id for s in p.test}) == 1 and len(p.train) == 6 and p.unused == 4
    # clips of one YouTube upload (VGGSound names `<youtube id>_<start>`) are one source: never on both sides
    yt = [ReviewSegment(f"{v}-0", v, "c", "c", "", 0.0, 3.0) for v in
          ["abcdefghijk_000010", "abcdefghijk_000030", "abcdefghijk_000050", "zyxwvutsrqp_000000", "other_clip"]]
    for seed in range(20):
        p = split_class("c", yt, 5, 2, seed=seed)
        sides = {s.video_id[:11]: "test" for s in p.test}
        assert all(sides.get(s.video_id[:11]) is None for s in p.train), seed
    # train spreads over source videos: one segment per video per round
    p = split_class("c", segs([1, 5, 5, 5]), 4, 1, seed=0)
    assert len({s.video_id for s in p.train}) == 3


def test_short_and_missing_classes(run, capsys):
    argv = ["--out", str(run), "--classes", "dog barking,playing cello,lions roaring", "--per-class", "6",
            "--test-per-class", "2", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "playing cello (4 accepted)" in err and "lions roaring" in err
    assert "--allow-short" in err and not (run / "avsync15").exists()
    assert main([*argv, "--allow-short"]) == 0
    out = capsys.readouterr()
    dest = run / "avsync15"
    cello = [x for x in lines(dest / "train.txt") + lines(dest / "test.txt") if x.startswith("playing_cello/")]
    # 4 accepted in two videos of 2: test gets round(4 * 2 / 6) = 1 item, lent by one video whose other
    # segment stays out; train takes the other video's 2
    assert len(cello) == 3 and len([x for x in lines(dest / "test.txt") if x.startswith("playing_cello/")]) == 1
    card = (dest / "README.md").read_text()
    assert "| playing cello | `playing_cello` | 2 | 1 | 1 / 1 | 4 | 1 |" in card
    assert "Short classes" in card and "playing cello (4 accepted)" in card and "lions roaring" in card
    assert "playing cello (4 accepted)" in out.out


def test_cli_help_and_errors(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--test-per-class" in capsys.readouterr().out
    (tmp_path / "bare").mkdir()
    shutil.copy(run / "segments.parquet", tmp_path / "bare" / "segments.parquet")
    cases = [
        (["--out", str(tmp_path / "missing")], "does not exist"),
        ([], "--out is required"),
        (["--out", str(tmp_path / "bare")], "no review decisions"),
        (["--out", str(run), "--classes", "avsync16"], "not a shipped list (avsync15, vggss), not a file"),
        (["--out", str(run), "--classes", "dog barking", "--test-per-class", "6", "--per-class", "6"], "below per_class"),
        (["--out", str(run), "--classes", "avsync15"], "have fewer than 100"),
        (["--out", str(run), "per_clas=3"], "unknown setting 'per_clas'"),
    ]
    for argv, msg in cases:
        assert main([*argv, "--no-progress"]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and msg in err[0], (argv, err)
    first = sorted((run / "shards").glob("*.tar"))[0]
    first.write_bytes(first.read_bytes()[:5000])  # a truncated shard: its segments are missing, said clearly
    assert main(["--out", str(run), *ARGS]) == 2
    assert "are not in" in capsys.readouterr().err


def test_config_file_equals_flags(run, tmp_path):
    cfg = tmp_path / "split.yaml"
    cfg.write_text("classes: dog barking,hammering\nper_class: 6\ntest_per_class: 2\nsamples_per_shard: 5\n")
    assert main(["--out", str(run), "--dest", str(tmp_path / "a"), *ARGS]) == 0
    assert main(["--out", str(run), "--dest", str(tmp_path / "b"), "--config", str(cfg), "--no-progress"]) == 0
    for name in ("train.txt", "test.txt"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert [p.name for p in sorted((tmp_path / "b" / "shards").glob("*.tar"))] == [
        "test-000000.tar", "train-000000.tar", "train-000001.tar"]  # 8 train items, 5 per shard


def test_real_curation_run_reviewed_and_split(tmp_path):
    """The whole path on a real (weight-free, in-process) curation run of synthetic sounding videos:
    curate -> review over HTTP -> split; the dataset's shards hold the run's own media."""
    from curate import synthetic as syn
    from pipelines.curate import main as curate_main

    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(2):
        syn.write_video(src / "dog barking" / f"dog{i}_000000.mp4", syn.bouncing_video(4.0, seed=i)[0])
        syn.write_video(src / "hammering" / f"ham{i}_000000.mp4", syn.cut_video(7.0, cut_at=3.5, seed=10 + i))
    assert curate_main(["--src", str(src), "--out", str(out), "--local", "--no-progress", "--min-segments-per-class", "0"]) == 0
    s = Served(out, reviewer="dana")
    try:
        segs = s.state()["segments"]
        assert Counter(x["class"] for x in segs) == {"dog barking": 2, "hammering": 4}  # the cut splits each video
        for x in segs:
            assert s.decide(x["segment_id"], "accept")[0] == 200
    finally:
        s.close()
    assert main(["--out", str(out), "--classes", "dog barking,hammering", "--per-class", "2", "--test-per-class", "1",
                 "--no-progress"]) == 0
    dest = out / "avsync15"
    man = pq.read_table(dest / "manifest.parquet").to_pylist()
    assert Counter((r["class"], r["split"]) for r in man) == {("dog barking", "train"): 1, ("dog barking", "test"): 1,
                                                            ("hammering", "train"): 1, ("hammering", "test"): 1}
    assert len({r["video_id"] for r in man}) == 4
    run_members = dict(read_tar_members(out / "shards" / "train-000000.tar"))
    for split in ("train", "test"):
        (tar,) = sorted((dest / "shards").glob(f"{split}-*.tar"))
        for name, data in read_tar_members(tar):
            if name.endswith((".mp4", ".flac")):
                assert data == run_members[name]
        for smp in iter_segments(str(tar)):
            assert smp.meta["split"] == split and smp.video.num_frames >= 30 and smp.video.audio.std() > 0
