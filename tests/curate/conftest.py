"""Fixtures: synthetic sounding videos with known properties, and bad inputs of every kind."""

from __future__ import annotations

import contextlib
import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from curate import synthetic as syn



def write_custom(path: Path, frames: np.ndarray | None, pts_ms: list[int] | None, audio: np.ndarray | None,
                 rate: int = 16000, layout: str = "mono", fmt: str = "mp4") -> Path:
    """Write an mp4 with explicit frame timestamps (ms; VFR allowed) and any audio layout/rate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as out:
        vs = None
        if frames is not None:
            vs = out.add_stream("libx264", rate=Fraction(30))
            vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            vs.time_base = Fraction(1, 1000)
            vs.codec_context.time_base = Fraction(1, 1000)
        as_ = None
        if audio is not None:
            as_ = out.add_stream("aac", rate=rate)
            as_.layout = layout
        if vs is not None:
            for f, t in zip(frames, pts_ms):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                vf.pts = t
                vf.time_base = Fraction(1, 1000)
                for p in vs.encode(vf):
                    out.mux(p)
            for p in vs.encode():
                out.mux(p)
        if as_ is not None:
            a = np.ascontiguousarray(np.asarray(audio, np.float32))
            if a.ndim == 1:
                a = a[None]
            af = av.AudioFrame.from_ndarray(a.reshape(1, -1) if a.shape[0] == 1 else a.T.reshape(1, -1).copy(),
                                            format="flt", layout=layout)
            af.sample_rate, af.pts = rate, 0
            for p in as_.encode(af):
                out.mux(p)
            for p in as_.encode():
                out.mux(p)
    return path


def rotate_mp4(src: Path, dst: Path) -> Path:
    """Copy an mp4 setting its track matrix to a 90-degree clockwise display rotation (as phones write)."""
    import struct

    d = bytearray(src.read_bytes())
    i = d.find(b"tkhd")
    ver = d[i + 4]
    off = i + 8 + (16 if ver == 1 else 8) + 8 + (8 if ver == 1 else 4) + 8 + 8
    d[off : off + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    dst.write_bytes(bytes(d))
    return dst


@pytest.fixture(scope="session")
def known_folder(tmp_path_factory) -> Path:
    """One video per known outcome (label = folder name)."""
    root = tmp_path_factory.mktemp("known")
    syn.write_video(root / "static" / "static_000000.mp4", syn.static_video(6.0))
    syn.write_video(root / "noise" / "noise_000000.mp4", syn.noise_video(6.0))
    syn.write_video(root / "silent" / "silent_000000.mp4", syn.bouncing_video(6.0, silent=True, seed=2)[0])
    syn.write_video(root / "cut" / "cut_000000.mp4", syn.cut_video(8.0, cut_at=4.0, seed=3))
    syn.write_video(root / "bounce" / "bounce_000000.mp4", syn.bouncing_video(6.0, seed=4)[0])
    return root


@pytest.fixture(scope="session")
def bad_folder(tmp_path_factory) -> Path:
    """Every kind of bad input next to one good video."""
    root = tmp_path_factory.mktemp("bad")
    good, _ = syn.bouncing_video(4.0, seed=5)
    syn.write_video(root / "good.mp4", good)
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    data = (root / "good.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "head_only.mp4").write_bytes(data[:200])
    syn.write_video(root / "no_audio.mp4", good, with_audio=False)
    rotate_mp4(root / "good.mp4", root / "rotated.mp4")
    write_custom(root / "audio_only.mp4", None, None, good.audio)
    short, _ = syn.bouncing_video(2.0, seed=6)
    syn.write_video(root / "short.mp4", short)
    # odd audio: 22.05 kHz 3 channels
    a3 = np.stack([good.audio[: int(4 * 16000)]] * 3)
    import librosa

    a3 = librosa.resample(a3, orig_sr=16000, target_sr=22050)
    write_custom(root / "odd_audio.mp4", good.frames, [int(i * 1000 / good.fps) for i in range(good.num_frames)], a3,
                 rate=22050, layout="3.0")
    # variable frame rate: gaps alternate 40 ms / 100 ms
    pts, t = [], 0
    for i in range(60):
        pts.append(t)
        t += 40 if i % 2 else 100
    idx = np.minimum((np.array(pts) / 1000 * good.fps).astype(int), good.num_frames - 1)
    write_custom(root / "vfr.mp4", good.frames[idx], pts, syn.clicks_at(np.arange(0.1, 4.0, 0.5), 4.2))
    tiny = np.zeros((120, 8, 8, 3), np.uint8) + np.arange(120, dtype=np.uint8)[:, None, None, None]
    write_custom(root / "tiny.mp4", tiny, [i * 33 for i in range(120)], good.audio)
    big = np.repeat(np.repeat(good.frames[:40:4], 12, axis=1), 12, axis=2)[:, :1080, :1920]  # 1920x1080
    big = np.repeat(big, 10, axis=0)[: 4 * 10]
    write_custom(root / "huge.mp4", big, [i * 100 for i in range(big.shape[0])], good.audio)
    return root


@contextlib.contextmanager
def moto_s3(bucket: str):
    """A moto S3 server on 127.0.0.1 with `bucket` created, and the AWS_* variables that point every process
    (and raylet) at it; yields those variables, stops the server and restores the environment after."""
    import logging
    import os

    pytest.importorskip("s3fs", reason="object-storage tests need the `test` extra (s3fs, moto[server])")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = dict(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               AWS_ENDPOINT_URL=f"http://{host}:{port}")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import fsspec
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a cached client would still point at another test's server
    try:
        fsspec.filesystem("s3").mkdir(bucket)
        yield env
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
