"""The shard format every consumer reads: WebDataset tars of merged segments.

`shards/{split}-{index:06d}.tar`, one sample per merged segment, key = segment id (no dots):
- `<key>.mp4`  : h264 video of the segment at the working resolution and frame rate (with an AAC copy
                 of the audio so the file plays on its own)
- `<key>.flac` : the canonical audio, mono, 16-bit, at the working audio rate (16 kHz by default)
- `<key>.json` : metadata: segment_id, video_id, source, start, end, duration, label, split, fps,
                 num_frames, audio_rate, scores (mean of each score over the segment's windows),
                 windows (start/end of the merged windows), source_info (original size, fps, audio rate
                 and channels, rotation, vfr), random_weights (scores that came from random-init models)

Tars are written to a temporary name and renamed, so a reader never sees a partial shard.
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from media.decode import DecodeConfig, DecodedVideo, decode_flac, decode_video

SHARD_PATTERN = "{split}-{index:06d}.tar"


def make_key(text: str) -> str:
    """A WebDataset-safe key: no dots, no path separators."""
    return "".join(c if (c.isalnum() or c in "-_") else "_" for c in text)


@dataclass
class SegmentSample:
    key: str
    video: DecodedVideo
    """frames + audio of the segment (audio from the flac member)."""
    meta: dict


def _write_tar(fileobj, members: Iterable[tuple[str, bytes]]) -> None:
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0  # reproducible bytes
            info.mode = 0o644
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))


def write_tar_atomic(path: str | Path, members: Iterable[tuple[str, bytes]]) -> None:
    """Write (name, bytes) members into a tar at `path` via a temporary name and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        _write_tar(f, members)
    os.replace(tmp, path)


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """The same tar as `write_tar_atomic` writes, in memory (for object stores: one PUT)."""
    buf = io.BytesIO()
    _write_tar(buf, members)
    return buf.getvalue()


def stream_tar_members(path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) members of a tar (a path or a binary file), read sequentially (never the whole shard in
    memory)."""
    opened = tarfile.open(fileobj=path, mode="r|*") if hasattr(path, "read") else tarfile.open(path, "r|*")
    with opened as tar:
        for m in tar:
            if m.isfile():
                yield m.name, tar.extractfile(m).read()


def read_tar_members(path) -> list[tuple[str, bytes]]:
    """Every (name, bytes) member of a tar, as a list."""
    return list(stream_tar_members(path))


def group_samples(members: Iterable[tuple[str, bytes]]) -> Iterator[dict[str, bytes]]:
    """Group consecutive tar members `<key>.<ext>` into {'__key__': key, ext: bytes} samples."""
    cur: dict[str, bytes] | None = None
    for name, data in members:
        base = os.path.basename(name)
        key, _, ext = base.partition(".")
        if cur is None or cur["__key__"] != key:
            if cur is not None:
                yield cur
            cur = {"__key__": key}
        cur[ext] = data
    if cur is not None:
        yield cur


def decode_sample(sample: dict, decode: DecodeConfig | None = None) -> SegmentSample:
    """Decode one raw sample (dict of member bytes, as webdataset or `group_samples` yields)."""
    meta = json.loads(sample["json"])
    cfg = decode or DecodeConfig(short_side=0, max_fps=1000.0, audio_rate=int(meta.get("audio_rate", 16000)))
    video = decode_video(io.BytesIO(sample["mp4"]), cfg)
    if "flac" in sample:
        audio, rate = decode_flac(sample["flac"])
        if rate != video.audio_rate:
            import librosa

            audio = librosa.resample(audio, orig_sr=rate, target_sr=video.audio_rate).astype(np.float32)
        video.audio = audio
    return SegmentSample(sample["__key__"], video, meta)


def expand_urls(patterns: str | Iterable[str]) -> list[str]:
    """Shard paths from globs / brace lists / explicit paths, sorted and de-duplicated."""
    if isinstance(patterns, (str, Path)):
        patterns = [str(patterns)]
    out: list[str] = []
    for p in patterns:
        p = str(p)
        if any(ch in p for ch in "{}"):
            import braceexpand

            for q in braceexpand.braceexpand(p):
                out.extend(sorted(glob.glob(q)) or [q])
        elif any(ch in p for ch in "*?["):
            out.extend(sorted(glob.glob(p)))
        else:
            out.append(p)
    seen, uniq = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            uniq.append(p)
    return uniq


def iter_segments(patterns: str | Iterable[str], decode: DecodeConfig | None = None) -> Iterator[SegmentSample]:
    """Iterate decoded segments of shards in order (no webdataset shuffle; for tools and tests)."""
    urls = expand_urls(patterns)
    if not urls:
        raise FileNotFoundError(f"no shards match {patterns!r}")
    for url in urls:
        for sample in group_samples(stream_tar_members(url)):
            yield decode_sample(sample, decode)


@dataclass(frozen=True)
class ReaderSplit:
    """The part of a shard list one reader takes: `urls`, and of their samples (counted in `urls` order)
    those with index % stride == offset."""

    urls: list[str]
    offset: int = 0
    stride: int = 1


def split_for_reader(urls: list[str], rank: int = 0, world_size: int = 1, worker: int = 0, num_workers: int = 1) -> ReaderSplit:
    """Split shards between every reader of a distributed run: process `rank` of `world_size`, DataLoader
    worker `worker` of `num_workers` (reader r = rank * num_workers + worker of n = world_size * num_workers).

    With at least n shards each reader takes every n-th shard (r, r + n, ...) and all their samples; with
    fewer shards every reader reads all of them and keeps every n-th sample starting at r. Either way the
    readers' samples are disjoint and together are every sample once. Every reader must be given the same
    `urls` in the same order (shuffle them with a seed shared by all processes)."""
    n = max(1, world_size) * max(1, num_workers)
    r = rank * max(1, num_workers) + worker
    if not 0 <= r < n:
        raise ValueError(f"reader {r} out of range for {world_size} processes x {num_workers} workers")
    if len(urls) >= n:
        return ReaderSplit(list(urls[r::n]))
    return ReaderSplit(list(urls), r, n)


def webdataset_pipeline(patterns: str | Iterable[str], shuffle: int = 0, decode: DecodeConfig | None = None):
    """A `webdataset.WebDataset` over the shards yielding SegmentSample (for training loaders)."""
    import webdataset as wds

    urls = expand_urls(patterns)
    if not urls:
        raise FileNotFoundError(f"no shards match {patterns!r}")
    ds = wds.WebDataset(urls, shardshuffle=len(urls) if shuffle else False, empty_check=False)
    if shuffle:
        ds = ds.shuffle(shuffle)
    return ds.map(lambda s: decode_sample(s, decode))


def encode_sample(key: str, video: DecodedVideo, meta: dict, crf: int = 18, preset: str = "superfast") -> list[tuple[str, bytes]]:
    """The tar members of one segment sample (used by the curation writer and by tests' fixtures)."""
    from media.encode import encode_flac, encode_mp4

    if "." in key or "/" in key:
        raise ValueError(f"sample key must not contain dots or slashes: {key!r}")
    meta = dict(meta)
    meta.setdefault("segment_id", key)
    meta.update(fps=video.fps, num_frames=video.num_frames, audio_rate=video.audio_rate)
    audio = video.audio if video.audio is not None else np.zeros(int(video.duration * video.audio_rate), np.float32)
    return [
        (f"{key}.flac", encode_flac(audio, video.audio_rate)),
        (f"{key}.json", json.dumps(meta, sort_keys=True, default=_json_default).encode()),
        (f"{key}.mp4", encode_mp4(video.frames, video.fps, audio, video.audio_rate, crf=crf, preset=preset)),
    ]


def write_shard(path: str | Path, samples: Iterable[tuple[str, DecodedVideo, dict]]) -> None:
    """Write (key, video, meta) samples as one shard (atomic)."""
    members: list[tuple[str, bytes]] = []
    for key, video, meta in samples:
        members.extend(encode_sample(key, video, meta))
    write_tar_atomic(path, members)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")
