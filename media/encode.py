"""Encoding in memory: h264/aac mp4 (reproducible, single-threaded x264) and 16-bit FLAC."""

from __future__ import annotations

import io

import av
import numpy as np


def encode_mp4(
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    audio_rate: int = 16000,
    crf: int = 18,
    preset: str = "superfast",
) -> bytes:
    """Encode uint8 [T, H, W, 3] RGB frames (and optional mono float audio) to an h264/aac mp4 in memory.

    Odd sizes are cropped to even. x264 runs single-threaded; its output is then reproducible except
    that the first encode in a process can differ in a few bits (decoded frames within a few levels).
    """
    frames = np.asarray(frames)
    t, h, w, _ = frames.shape
    frames = frames[:, : h - h % 2, : w - w % 2]
    h2, w2 = frames.shape[1], frames.shape[2]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        from fractions import Fraction

        rate = Fraction(fps).limit_denominator(1001)
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = w2, h2, "yuv420p"
        vs.options = {"crf": str(crf), "preset": preset, "x264-params": "threads=1:lookahead-threads=1"}
        vs.codec_context.thread_count = 1
        vs.codec_context.thread_type = "NONE"
        as_ = None
        if audio is not None:
            as_ = out.add_stream("aac", rate=audio_rate)
            as_.layout = "mono"
        import cv2

        cv2.setNumThreads(1)
        for i in range(t):
            # RGB -> I420 with OpenCV (deterministic; PyAV's cached swscale context is not across calls)
            yuv = cv2.cvtColor(np.ascontiguousarray(frames[i]), cv2.COLOR_RGB2YUV_I420)
            fr = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            fr.pts = i
            for p in vs.encode(fr):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if as_ is not None:
            a = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(1, -1))
            af = av.AudioFrame.from_ndarray(a, format="flt", layout="mono")
            af.sample_rate = audio_rate
            af.pts = 0
            for p in as_.encode(af):
                out.mux(p)
            for p in as_.encode():
                out.mux(p)
    return buf.getvalue()


def encode_flac(audio: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32).clip(-1, 1), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
