"""Streaming the samples of WebDataset shards to training readers (processes x DataLoader workers):
the exact (every sample once per data epoch) and resampled (shards drawn with replacement) modes."""

from __future__ import annotations

import json
import logging
import os
import random
import tarfile
from dataclasses import dataclass
from typing import Iterator

import torch

from media.shards import expand_urls

log = logging.getLogger(__name__)

DATA_MODES = ("auto", "exact", "resampled")
"""How readers (processes x DataLoader workers) share the shards: see `ShardStream`."""


def open_shard(url: str):
    """The file object every shard read goes through (one place to count or redirect reads)."""
    return open(url, "rb")


def index_shard(url: str) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """A shard's samples from its tar headers alone (no member data is read): [(key, [(ext, data offset,
    size), ...]), ...] in file order, members `<key>.<ext>` grouped as `media.shards.group_samples` does."""
    out: list[tuple[str, list[tuple[str, int, int]]]] = []
    with open_shard(url) as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, _, ext = os.path.basename(m.name).partition(".")
            if not out or out[-1][0] != key:
                out.append((key, []))
            out[-1][1].append((ext, m.offset_data, m.size))
    return out


def read_samples(url: str, index, start: int = 0, stop: int | None = None) -> Iterator[dict]:
    """Raw samples [start, stop) of a shard (dict of member bytes + `__key__`), reading only their members'
    bytes (seek + read through `open_shard`)."""
    with open_shard(url) as f:
        for key, members in index[start:stop]:
            s = {"__key__": key}
            for ext, off, size in members:
                f.seek(off)
                s[ext] = f.read(size)
            yield s


def count_samples(url: str) -> int:
    """Samples in a shard from the tar headers alone (no member data is read)."""
    return len(index_shard(url))


def resolve_mode(mode: str, num_shards: int, readers: int, repeat: bool = True) -> str:
    """'exact' or 'resampled' for a data mode: 'auto' is resampled when there are fewer shards than readers
    (processes x DataLoader workers), exact otherwise; a single pass (repeat=False) is always exact."""
    if mode not in DATA_MODES:
        raise ValueError(f"data mode {mode!r}: expected one of {', '.join(DATA_MODES)}")
    if not repeat:
        if mode == "resampled":
            raise ValueError("the resampled data mode is endless: it needs repeat=True")
        return "exact"
    if mode == "auto":
        return "resampled" if num_shards < readers else "exact"
    return mode


def resampled_warning(num_shards: int, readers: int) -> str:
    return (f"{num_shards} shard(s) for {readers} readers (processes x DataLoader workers): data mode 'resampled' "
            "(each reader draws whole shards with replacement; epochs are nominal). Write more shards than readers, "
            "or set the data mode to 'exact' (readers then split shards by sample, reading only their own members)")


def too_few_samples(patterns, world_size: int, num_workers: int, mode: str = "auto") -> str | None:
    """Why R processes x W workers cannot all read from these shards in the exact mode (fewer samples than
    readers), or None (also None in the resampled mode, where any reader can draw any shard)."""
    urls = expand_urls(patterns)
    n = max(1, world_size) * max(1, num_workers)
    if len(urls) >= n or resolve_mode(mode, len(urls), n) == "resampled":
        return None
    total = sum(count_samples(u) for u in urls)
    if total >= n:
        return None
    return (f"{total} samples for {world_size} process(es) x {max(1, num_workers)} DataLoader worker(s): every reader "
            "needs one; use fewer workers (or the resampled data mode)")


def batches_of_worker(consumed_batches: int, worker: int, num_workers: int) -> int:
    """How many of the first `consumed_batches` batches a DataLoader took from `worker`: with an endless
    IterableDataset the loader takes batch j from worker j % num_workers."""
    w = max(1, num_workers)
    return 0 if consumed_batches <= worker else (consumed_batches - worker + w - 1) // w


@dataclass(frozen=True)
class Piece:
    """Samples [start, stop) of shard `url`, read in data epoch `epoch` (exact mode; in the resampled mode
    the reader's round), `tag` names that visit for the per-sample random draws."""

    epoch: int
    url: str
    start: int
    stop: int
    tag: str


@dataclass(frozen=True)
class ReaderPlan:
    """What one reader reads in one round (its 'epoch'): pieces of shards, in order."""

    mode: str
    pieces: tuple[Piece, ...]

    def __len__(self) -> int:
        return sum(p.stop - p.start for p in self.pieces)

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.pieces]

    def drop(self, k: int) -> "ReaderPlan":
        """The plan without its first k samples (nothing of them is read)."""
        out = []
        for p in self.pieces:
            n = p.stop - p.start
            if k >= n:
                k -= n
                continue
            out.append(Piece(p.epoch, p.url, p.start + k, p.stop, p.tag))
            k = 0
        return ReaderPlan(self.mode, tuple(out))


class ShardStream(torch.utils.data.IterableDataset):
    """The samples of WebDataset shards, split between the R processes of a distributed run and their W
    DataLoader workers (n = R x W readers; reader = rank x W + worker), in an order that depends only on
    (seed, round, reader). Two data modes (`mode`; 'auto': resampled when shards < readers, else exact):

    - exact: the shards of data epoch e, in an order shuffled per epoch with a seed every process shares
      (when `shuffle`), are one sequence of N samples; epochs follow each other into an endless sequence S.
      Each reader reads rounds of L = N // n samples: in round k reader r takes the contiguous positions
      [(k n + r) L, (k n + r + 1) L) of S. All readers have the same round length, so readers consuming
      batches in lockstep (what a DataLoader and synchronous ranks do) never drift: what all readers have
      read after k rounds is the first k n L samples of S, i.e. every sample exactly once per data epoch
      over any number of epochs (a round may end in the next epoch). A reader reads only its positions:
      whole shards, or with fewer shards than readers (or at range ends) a range of a shard's samples,
      found from the tar headers and read by seek (`index_shard`, `read_samples`). Needs N >= n.
      A single pass (repeat=False) splits epoch 0 into n ranges of N // n or N // n + 1 samples.
    - resampled (as OpenCLIP's --dataset-resampled, for many nodes): each reader draws whole shards with
      replacement, max(1, shards // n) draws per round, from its own seeded generator, and streams each
      drawn shard once per draw. Epochs are nominal; no sample count has to fit the readers.

    A shuffle buffer of `shuffle` raw samples mixes each round of a reader (`shuffle_shards`: shuffle the
    shard order per epoch; default: when `shuffle` > 0). Each sample gets its own random
    generator from (seed, epoch or draw, key) for the random choices made when it is decoded (clip window,
    posterior noise), so a run can restart at any batch: `start_batches` batches already consumed per
    process are skipped (whole rounds by counting tar headers, a partial round by seeking when there is no
    shuffle buffer, else by reading and dropping up to one round).

    The exact mode needs every shard's sample count (tar headers: 512 bytes per member, read with 16 threads,
    once per process; give `num_workers` to count in the constructor, before a DataLoader forks its
    workers, so that they share the counts). A sample `decode` skips (None) shortens its reader's round.

    Subclasses turn a raw sample (dict of member bytes + `__key__`) into a training item in `decode` (None:
    skip that sample, e.g. an unusable segment the subclass has logged).
    Set `log_dir` to append every yielded key to `keys-rank{r}-worker{w}.jsonl` there (split checks)."""

    def __init__(self, patterns, shuffle: int = 0, repeat: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, batch_size: int = 1, start_batches: int = 0, log_dir: str | None = None,
                 mode: str = "auto", num_workers: int | None = None, shuffle_shards: bool | None = None):
        self.urls = expand_urls(patterns)
        if not self.urls:
            raise FileNotFoundError(f"no shards match {patterns!r}")
        if mode not in DATA_MODES:
            raise ValueError(f"data mode {mode!r}: expected one of {', '.join(DATA_MODES)}")
        self.shuffle, self.repeat, self.seed, self.mode = shuffle, repeat, seed, mode
        self.shuffle_shards = bool(shuffle) if shuffle_shards is None else shuffle_shards
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.start_batches, self.log_dir = start_batches, log_dir
        self._counts: dict[str, int] = {}
        self._index: dict[str, list] = {}  # member offsets of the few shards being read (see `index`)
        self.num_workers = num_workers
        if num_workers is not None and resolve_mode(mode, len(self.urls), max(1, world_size) * max(1, num_workers),
                                                    repeat) == "exact":
            self.count_all()  # here, before a DataLoader forks its workers: they inherit the counts

    # ---------------------------------------------------------------------------------- ordering

    INDEX_CACHE = 4
    """Shards whose member offsets a reader keeps (its current pieces; counts are kept for every shard)."""

    def index(self, url: str) -> list:
        """The member offsets of a shard (tar headers; a few recent shards are kept)."""
        if url not in self._index:
            while len(self._index) >= self.INDEX_CACHE:
                self._index.pop(next(iter(self._index)))
            self._index[url] = index_shard(url)
            self._counts[url] = len(self._index[url])
        return self._index[url]

    def count(self, url: str) -> int:
        if url not in self._counts:
            self._counts[url] = len(self.index(url))
        return self._counts[url]

    def count_all(self, threads: int = 16) -> int:
        """Count the samples of every shard (tar headers only, `threads` shards at a time, which hides the
        latency of network storage); returns the total. Done once per process."""
        todo = [u for u in self.urls if u not in self._counts]
        if len(todo) > 1 and threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(threads, len(todo))) as pool:
                for u, n in zip(todo, pool.map(count_samples, todo)):
                    self._counts[u] = n
        for u in todo:
            self.count(u)
        return sum(self._counts[u] for u in self.urls)

    def epoch_order(self, epoch: int) -> list[str]:
        urls = list(self.urls)
        if self.shuffle_shards:
            random.Random(f"shards-{self.seed}-{epoch}").shuffle(urls)  # the same on every process
        return urls

    def positions(self, start: int, stop: int) -> list[Piece]:
        """Positions [start, stop) of the endless exact-mode sequence S as pieces of shards."""
        total = self.count_all()
        out: list[Piece] = []
        p = start
        while p < stop:
            epoch, q = divmod(p, total)
            base = 0
            for u in self.epoch_order(epoch):
                n = self.count(u)
                if q < base + n:
                    a = q - base
                    b = min(n, a + (stop - p))
                    out.append(Piece(epoch, u, a, b, str(epoch)))
                    p += b - a
                    q += b - a
                    if p >= stop:
                        break
                base += n
        return out

    def epoch_split(self, epoch: int, worker: int, num_workers: int) -> ReaderPlan:
        """What reader (rank, worker) reads in its round `epoch`."""
        n = max(1, self.world_size) * max(1, num_workers)
        r = self.rank * max(1, num_workers) + worker
        if not 0 <= r < n:
            raise ValueError(f"reader {r} out of range for {self.world_size} processes x {num_workers} workers")
        mode = resolve_mode(self.mode, len(self.urls), n, self.repeat)
        if mode == "resampled":
            draws = max(1, len(self.urls) // n)
            pieces = []
            for j in range(epoch * draws, (epoch + 1) * draws):
                u = self.urls[random.Random(f"resampled-{self.seed}-{r}-{j}").randrange(len(self.urls))]
                pieces.append(Piece(epoch, u, 0, self.count(u), f"r{r}d{j}"))
            return ReaderPlan(mode, tuple(pieces))
        total = self.count_all()
        if not self.repeat:
            return ReaderPlan(mode, tuple(self.positions(r * total // n, (r + 1) * total // n)))
        size = total // n
        start = (epoch * n + r) * size
        return ReaderPlan(mode, tuple(self.positions(start, start + size)))

    def epoch_length(self, split: ReaderPlan) -> int:
        return len(split)

    def raw_epoch(self, epoch: int, split: ReaderPlan, reader: int) -> Iterator[dict]:
        """This reader's raw samples of one round, in order (each with `__epoch__` and `__tag__`)."""

        def mine():
            for p in split.pieces:
                for s in read_samples(p.url, self.index(p.url), p.start, p.stop):
                    s["__epoch__"], s["__tag__"] = p.epoch, p.tag
                    yield s

        if not self.shuffle:
            yield from mine()
            return
        rng = random.Random(f"buffer-{self.seed}-{epoch}-{reader}")
        buf: list[dict] = []
        for s in mine():
            if len(buf) < self.shuffle:
                buf.append(s)
                continue
            i = rng.randrange(len(buf))
            buf[i], s = s, buf[i]
            yield s
        rng.shuffle(buf)
        yield from buf

    def sample_rng(self, epoch, key: str) -> random.Random:
        return random.Random(f"sample-{self.seed}-{epoch}-{key}")

    def decode(self, raw: dict, rng: random.Random) -> dict:
        raise NotImplementedError

    # ---------------------------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        return self.iter_reader(*((info.id, info.num_workers) if info else (0, 1)))

    def iter_reader(self, worker: int = 0, num_workers: int = 1) -> Iterator[dict]:
        """The items of DataLoader worker `worker` of `num_workers` on this process. After a restart the loader
        asks worker 0 first, but the next batch of the uninterrupted run was due from worker
        start_batches % num_workers: each worker continues the stream of that rotated worker."""
        stream = (worker + self.start_batches) % num_workers
        reader = self.rank * num_workers + stream
        readers = max(1, self.world_size) * max(1, num_workers)
        if self.mode == "auto" and self.repeat and len(self.urls) < readers and self.rank == 0 and worker == 0:
            log.warning(resampled_warning(len(self.urls), readers))
        skip = batches_of_worker(self.start_batches, stream, num_workers) * self.batch_size
        log_file = None
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            log_file = open(os.path.join(self.log_dir, f"keys-rank{self.rank}-worker{worker}.jsonl"), "a")
        rnd = 0
        try:
            while True:
                split = self.epoch_split(rnd, stream, num_workers)
                n = len(split)
                if n == 0 and (self.repeat or skip):
                    raise ValueError(f"reader {reader} (rank {self.rank}, worker {worker}) has no samples in round {rnd}: "
                                     "fewer samples than processes x DataLoader workers (use the resampled data mode)")
                if skip >= n and self.repeat:  # a whole round already consumed: skip it without reading
                    skip, rnd = skip - n, rnd + 1
                    continue
                if skip and not self.shuffle:  # the rest of the consumed part: not read at all
                    split, skip = split.drop(skip), 0
                for raw in self.raw_epoch(rnd, split, reader):
                    if skip:
                        skip -= 1
                        continue
                    item = self.decode(raw, self.sample_rng(raw["__tag__"], raw["__key__"]))
                    if item is None:  # the subclass skipped an unusable sample (and said why)
                        continue
                    item["key"] = raw["__key__"]
                    if log_file:
                        log_file.write(json.dumps({"epoch": raw["__epoch__"], "round": rnd, "key": raw["__key__"],
                                                   "rank": self.rank, "worker": worker}) + "\n")
                        log_file.flush()
                    yield item
                if not self.repeat:
                    return
                rnd += 1
        finally:
            if log_file:
                log_file.close()


def data_plan(patterns, world_size: int = 1, num_workers: int = 1, mode: str = "auto", repeat: bool = True) -> dict:
    """How the shards are shared by the readers of a run (for dry runs and logs): the resolved mode, shard and
    sample counts (from tar headers), samples per reader round and shards (or shard pieces) per reader."""
    urls = expand_urls(patterns)
    if not urls:
        raise FileNotFoundError(f"no shards match {patterns!r}")
    n = max(1, world_size) * max(1, num_workers)
    resolved = resolve_mode(mode, len(urls), n, repeat)
    ds = ShardStream(urls, mode=resolved, repeat=repeat, world_size=world_size)
    samples = ds.count_all()
    plan = {"mode": resolved, "shards": len(urls), "samples": samples, "readers": n, "processes": world_size,
            "workers_per_process": num_workers}
    if resolved == "resampled":
        plan.update(draws_per_round=max(1, len(urls) // n), warning=resampled_warning(len(urls), n) if mode == "auto" else None)
    else:
        pieces = []
        if samples >= n:
            for r in range(n):
                ds.rank = r // max(1, num_workers)
                pieces.append(len(ds.epoch_split(0, r % max(1, num_workers), num_workers).pieces))
        plan.update(samples_per_reader_round=samples // n if repeat else -(-samples // n),
                    shard_pieces_per_reader=[min(pieces), max(pieces)] if pieces else None,
                    error=None if samples >= n else too_few_samples(urls, world_size, num_workers, "exact"))
    return plan
