"""Sync-classifier instances from curated shards: segments split between readers by `media.stream.ShardStream`
(exact: a reader reads only its own shards; fewer shards than readers: resampled)."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

import numpy as np
import pytest

from media.shards import write_shard
from sync_classifier.config import PRESETS
from sync_classifier.data import InstanceStream, clip_offsets
from tests.train.conftest import count_shard_reads, sounding_video


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("sync_shards")
    for i in range(2):
        write_shard(d / f"train-{i:06d}.tar", [(f"seg{i}", sounding_video(i, seconds=6.5, size=32), {"label": "x"})])
    write_shard(d / "short-000000.tar", [("short", sounding_video(9, seconds=3.0, size=32), {"label": "x"})])
    return d


@pytest.fixture
def reads(monkeypatch):
    """Bytes read per (reader, shard) through media.stream.open_shard."""
    got: dict = defaultdict(Counter)
    current = {"reader": None}

    count_shard_reads(monkeypatch, lambda url, n: got[current["reader"]].update({url: n}))
    return got, current


def stream(urls, rank, world, mode="auto"):
    spec = PRESETS["tiny"]().model.spec
    return InstanceStream(spec, clip_offsets(21, 0.2), source="shards", path=urls, seed=4, rank=rank, world_size=world,
                          shuffle_buffer=1, data_mode=mode)


def test_exact_mode_each_reader_reads_its_own_shard(shards, reads):
    got, current = reads
    urls = sorted(str(p) for p in shards.glob("train-*.tar"))
    for rank in range(2):
        current["reader"] = rank
        inst = next(iter(stream(urls, rank, 2, "exact")))
        assert inst["mel"].shape[0] == 21 and inst["frames"].shape[0] == 21
        assert np.isfinite(inst["mel"].numpy()).all()
    mine = [max(got[r], key=got[r].get) for r in range(2)]
    assert sorted(mine) == urls  # one shard each, both covered
    for r in range(2):  # the other reader's shard: at most its tar headers, never its member bytes
        other = [u for u in urls if u != mine[r]][0]
        assert got[r][other] < 0.1 * got[r][mine[r]]


def test_fewer_shards_than_readers_resamples(shards, caplog):
    urls = [str(shards / "train-000000.tar")]
    with caplog.at_level(logging.WARNING, logger="train.data"):
        a = next(iter(stream(urls, 0, 2)))
        b = next(iter(stream(urls, 1, 2)))
    assert "data mode 'resampled'" in caplog.text
    assert a["mel"].shape == b["mel"].shape


def test_no_usable_segment_is_an_error(shards):
    with pytest.raises(RuntimeError, match="no usable sounding videos"):
        next(iter(stream([str(shards / "short-000000.tar")], 0, 1)))
