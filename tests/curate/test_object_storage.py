"""Storage behind --src / --out: local paths and object-storage URIs through one interface (an S3-compatible
server started on 127.0.0.1), videos decoded from a bucket equal to the same file on disk, inputs discovered
in a bucket as on disk, and a store nobody can reach is one error line."""

from __future__ import annotations


import numpy as np
import pytest

from media import storage
from tests.curate.conftest import moto_s3
from curate import synthetic as syn


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    with moto_s3("store"):
        yield "s3://store"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_write_read_list_remove(where, bucket, tmp_path):
    root = str(tmp_path / "root") if where == "local" else f"{bucket}/root"
    a, b = storage.join(root, "x", "a.status.json"), storage.join(root, "x", "b.windows.json")
    storage.write_bytes(a, b"1")
    storage.write_bytes(b, b"22")
    storage.write_bytes(a, b"333")  # replaced whole
    assert storage.read_bytes(a) == b"333" and storage.is_file(a) and not storage.is_file(storage.join(root, "no"))
    assert storage.find_files(root, ".status.json") == [a]
    assert storage.listdir_files(storage.join(root, "x")) == sorted([a, b])
    missing = storage.join(root, "x", "missing.json")
    assert storage.read_many([a, b, missing]) == {a: b"333", b: b"22"}
    storage.remove(a)
    assert storage.find_files(root, ".json") == [b]
    if where == "local":  # no temporary file is left beside a written one
        assert sorted(p.name for p in (tmp_path / "root" / "x").iterdir()) == ["b.windows.json"]


def test_a_video_in_a_bucket_decodes_as_on_disk_and_is_discovered_alike(bucket, tmp_path):
    import fsspec

    from curate.inputs import discover
    from media.decode import DecodeConfig, decode_video

    local = tmp_path / "src"
    syn.write_video(local / "dog barking" / "abcdefghijk_000010.mp4", syn.bouncing_video(3.0, seed=3)[0])
    syn.write_video(local / "other" / "abcdefghijk_000010.mp4", syn.bouncing_video(3.0, seed=4)[0])
    fs = fsspec.filesystem("s3")
    for p in local.rglob("*.mp4"):
        fs.put_file(str(p), f"store/src/{p.relative_to(local).as_posix()}")
    uri = f"{bucket}/src"
    on_disk, in_bucket = discover(str(local), [".mp4"]), discover(uri, [".mp4"])
    assert [(d.inp.video_id, d.inp.label) for d in on_disk] == [(d.inp.video_id, d.inp.label) for d in in_bucket]
    assert [d.inp.path for d in in_bucket] == [f"{uri}/dog barking/abcdefghijk_000010.mp4",
                                               f"{uri}/other/abcdefghijk_000010.mp4"]
    cfg = DecodeConfig(short_side=64)
    a, b = decode_video(on_disk[0].inp.path, cfg), decode_video(in_bucket[0].inp.path, cfg)
    assert a.frames.shape == b.frames.shape and np.array_equal(a.frames, b.frames)
    assert np.abs(a.audio - b.audio).max() <= 1e-6
    from media.decode import MediaError

    with pytest.raises(MediaError, match="not a file"):
        decode_video(f"{uri}/missing.mp4", cfg)


def test_an_unknown_object_store_is_one_error_line(tmp_path, capsys):
    from pipelines.curate import main as curate

    rc = curate(["--src", "nosuchproto://bucket/videos", "--out", str(tmp_path / "o"), "--local", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: --src 'nosuchproto://bucket/videos' cannot be read: ")
    assert not (tmp_path / "o").exists()
