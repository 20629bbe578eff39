"""The two data modes of `media.stream.ShardStream`: exact (every sample exactly once per data epoch over all
processes x DataLoader workers, epoch after epoch, with uneven shards) and resampled (readers draw whole
shards with replacement); in both, a reader reads only the bytes of the samples it yields."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import media.stream as data
from media.shards import write_tar_atomic
from media.stream import ShardStream, data_plan, too_few_samples
from tests.train.conftest import count_shard_reads

ROOT = Path(__file__).resolve().parents[2]


class KeyStream(ShardStream):
    """Keys only (no media); each item says which data epoch it was read for."""

    def decode(self, raw, rng):
        return {"epoch": raw["__epoch__"], "draw": rng.random()}


def key_shards(d, sizes: list[int], pad: int = 0) -> list[str]:
    """Shards of small json samples (sizes[i] samples in shard i, keys s{i}k{j}; `pad` extra bytes each)."""
    urls = []
    for i, n in enumerate(sizes):
        url = d / f"train-{i:06d}.tar"
        write_tar_atomic(url, [(f"s{i}k{j}.json", json.dumps({"i": i, "j": j, "pad": "x" * pad}).encode()) for j in range(n)])
        urls.append(str(url))
    return urls


def everything(sizes):
    return {f"s{i}k{j}" for i, n in enumerate(sizes) for j in range(n)}


def check_epochs_exactly_once(items, sizes, epochs):
    by_epoch = defaultdict(Counter)
    for it in items:
        by_epoch[it["epoch"]][it["key"]] += 1
    for e in range(epochs):
        assert set(by_epoch[e]) == everything(sizes) and max(by_epoch[e].values()) == 1, (e, by_epoch[e])


@pytest.mark.parametrize("sizes", [[5, 1, 3, 2, 1], [3, 1, 2, 2, 1], [7, 1, 2]],
                         ids=["12-samples-5-shards", "9-samples-5-shards", "10-samples-3-shards"])
@pytest.mark.parametrize("shuffle", [0, 3])
def test_exact_mode_every_sample_once_per_epoch_over_three_epochs(tmp_path, sizes, shuffle):
    """2 processes x 2 workers read in lockstep (as DataLoaders and synchronous ranks do): equal round lengths
    for every reader (no drift), and the first three data epochs are each every sample exactly once, also when
    the sample count does not divide by the readers and with fewer shards than readers (sample ranges)."""
    urls = key_shards(tmp_path, sizes)
    total = sum(sizes)
    per_round = total // 4
    rounds = -(-3 * total // (4 * per_round))
    items = []
    for rank in range(2):
        ds = KeyStream(urls, shuffle=shuffle, seed=7, rank=rank, world_size=2, mode="exact")
        for worker in range(2):
            assert [len(ds.epoch_split(k, worker, 2)) for k in range(rounds)] == [per_round] * rounds
            it = ds.iter_reader(worker, 2)
            items += [next(it) for _ in range(rounds * per_round)]
    check_epochs_exactly_once(items, sizes, 3)


def test_single_pass_reads_every_sample_once(tmp_path):
    sizes = [3, 1, 2]  # fewer shards than the 4 readers, 6 samples: ranges of 1 or 2 samples
    urls = key_shards(tmp_path, sizes)
    keys = [it["key"] for r in range(2) for w in range(2)
            for it in KeyStream(urls, shuffle=2, rank=r, world_size=2, repeat=False).iter_reader(w, 2)]
    assert sorted(keys) == sorted(everything(sizes))


@pytest.fixture
def counted(monkeypatch):
    """Bytes read per shard through media.stream.open_shard."""
    counts: Counter = Counter()
    count_shard_reads(monkeypatch, lambda url, n: counts.update({url: n}))
    return counts


def payload(url) -> int:
    return sum(size for _, members in data.index_shard(url) for _, _, size in members)


def test_exact_mode_reads_only_its_own_samples(tmp_path, counted):
    """Fewer shards (3) than readers (4) in the exact mode: each reader reads the members of its own samples
    only (no shard streamed in full by every reader), and over one epoch every member byte is read once."""
    sizes = [6, 2, 4]
    urls = key_shards(tmp_path, sizes, pad=200)
    headers = {}
    for u in urls:  # what reading the tar headers alone costs
        counted.clear()
        data.index_shard(u)
        headers[u] = counted[u]
    read_total = 0
    for rank in range(2):
        for worker in range(2):
            ds = KeyStream(urls, rank=rank, world_size=2, mode="exact")
            for u in urls:
                ds.index(u)  # headers first (cached per process)
            counted.clear()
            it = ds.iter_reader(worker, 2)
            keys = [next(it)["key"] for _ in range(3)]  # one round: 12 samples / 4 readers
            sizes_read = {k: len(json.dumps({"i": int(k[1]), "j": int(k[3:]), "pad": "x" * 200})) for k in keys}
            assert sum(counted.values()) == sum(sizes_read.values()), (rank, worker, keys)
            read_total += sum(counted.values())
    assert read_total == sum(payload(u) for u in urls)
    assert all(h < 0.5 * os.path.getsize(u) for u, h in headers.items())


def test_resampled_mode_reads_each_shard_once_per_draw(tmp_path, counted, caplog):
    """2 shards for 2 processes x 2 workers: auto picks the resampled mode (with a warning); every reader
    draws whole shards, and reads each drawn shard's bytes once per draw (plus its headers once)."""
    sizes = [3, 5]
    urls = key_shards(tmp_path, sizes, pad=300)
    headers = {}
    for u in urls:
        counted.clear()
        data.index_shard(u)
        headers[u] = counted[u]
    draws_seen = Counter()
    for rank in range(2):
        for worker in range(2):
            ds = KeyStream(urls, rank=rank, world_size=2, seed=3)
            counted.clear()
            with caplog.at_level(logging.WARNING, logger="train.data"):
                it = ds.iter_reader(worker, 2)
                plans = [ds.epoch_split(k, worker, 2) for k in range(6)]  # one draw per round
                assert all(p.mode == "resampled" and len(p.pieces) == 1 for p in plans)
                counted.clear()  # epoch_split indexed the drawn shards; count again from scratch
                ds._index.clear()
                items = [next(it) for _ in range(sum(len(p) for p in plans))]
            draws = Counter(p.urls[0] for p in plans)
            draws_seen.update(draws)
            assert [i["key"] for i in items] == [f"s{urls.index(p.urls[0])}k{j}" for p in plans for j in range(len(p))]
            for u in urls:
                assert counted[u] == draws[u] * payload(u) + (headers[u] if draws[u] else 0), (u, draws)
    assert set(draws_seen) == set(urls)  # both shards drawn by someone, with replacement
    assert "data mode 'resampled'" in caplog.text and caplog.text.count("resampled") >= 1


def test_modes_and_messages(tmp_path):
    urls = key_shards(tmp_path, [2, 1])
    assert too_few_samples(urls, 2, 2) is None  # auto: resampled, any count works
    assert too_few_samples(urls, 2, 2, mode="exact") == ("3 samples for 2 process(es) x 2 DataLoader worker(s): every "
                                                         "reader needs one; use fewer workers (or the resampled data mode)")
    ds = KeyStream(urls, rank=1, world_size=2, mode="exact")
    with pytest.raises(ValueError, match="fewer samples than processes x DataLoader workers"):
        next(ds.iter_reader(1, 2))
    with pytest.raises(ValueError, match="data mode 'sometimes'"):
        KeyStream(urls, mode="sometimes")
    assert not KeyStream(urls, world_size=2, num_workers=2)._counts  # resampled: nothing counted up front
    assert KeyStream(urls, world_size=1, num_workers=2)._counts == {urls[0]: 2, urls[1]: 1}  # exact: counted here
    plan = data_plan(urls, world_size=2, num_workers=2)
    assert plan["mode"] == "resampled" and plan["samples"] == 3 and plan["readers"] == 4 and plan["warning"]
    plan = data_plan(urls, world_size=1, num_workers=2)
    assert plan["mode"] == "exact" and plan["samples_per_reader_round"] == 1 and plan["shard_pieces_per_reader"] == [1, 1]


WORKER = textwrap.dedent('''
    import json, os, sys
    import torch, torch.distributed as dist
    from media.stream import ShardStream

    class KeyStream(ShardStream):
        def decode(self, raw, rng):
            return {"epoch": raw["__epoch__"]}

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    shards, out, batches, shuffle = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ds = KeyStream(shards, shuffle=shuffle, seed=11, rank=rank, world_size=world, batch_size=2, mode="exact")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=lambda x: x)
    it = iter(loader)
    mine = [{"key": s["key"], "epoch": s["epoch"]} for _ in range(batches) for s in next(it)]
    got = [None] * world
    dist.all_gather_object(got, mine)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(got, f)
    dist.destroy_process_group()
''')


def test_torchrun_two_processes_exactly_once_over_three_epochs(tmp_path):
    """torchrun, 2 processes (gloo) x 2 DataLoader workers, batch 2, uneven shards (13 samples, 4 readers):
    the batches the two ranks consumed cover data epochs 0, 1 and 2 each exactly once."""
    sizes = [4, 1, 3, 2, 1, 2]
    key_shards(tmp_path, sizes)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "keys.json"
    # 13 // 4 = 3 samples per reader round; 4 rounds (48 samples) cover 3 epochs (39): 12 per reader = 6 batches
    # per worker = 12 batches per process
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path / "train-*.tar"), str(out), "12", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    per_rank = json.loads(out.read_text())
    assert [len(x) for x in per_rank] == [24, 24]
    check_epochs_exactly_once([it for x in per_rank for it in x], sizes, 3)
