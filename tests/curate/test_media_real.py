"""Decoding real-world media: XviD/AC3 AVIs and real mp4s corrupted byte-wise at the start, middle and end
of each stream decode as ffmpeg plays them (bad packets skipped and counted), and the mono downmix never
raises the level above the source's (stereo, 5.1)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from curate import synthetic as syn
from curate.config import load_config
from media.decode import DecodeConfig, MediaError, decode_video, downmix
from curate.runner import run

MEDIA = Path(__file__).resolve().parents[2].parent / "shared" / "media"
RATE = 48000


def write_xvid_ac3(path: Path, seconds: float = 4.0, channels: np.ndarray | None = None, fps: int = 25) -> Path:
    """An AVI as old camcorder/DivX rips are: MPEG-4 part 2 video tagged XVID, AC3 audio at 48 kHz.
    The picture is a bouncing disc; `channels` [C, N] at 48 kHz (default: stereo clicks at the impacts)."""
    video, impacts = syn.bouncing_video(seconds, size=(96, 128), fps=fps, seed=7)
    if channels is None:
        mono = syn.clicks_at(impacts, seconds, rate=RATE)
        channels = np.stack([mono, mono])
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels.shape[0]]
    with av.open(str(path), "w", format="avi") as out:
        vs = out.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt, vs.codec_tag = 128, 96, "yuv420p", "XVID"
        vs.bit_rate = 400_000
        as_ = out.add_stream("ac3", rate=RATE)
        as_.layout = layout
        for i, img in enumerate(video.frames):
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts = i
            for p in vs.encode(fr):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels, np.float32), format="fltp", layout=layout)
        af.sample_rate, af.pts = RATE, 0
        for p in as_.encode(af):
            out.mux(p)
        for p in as_.encode():
            out.mux(p)
    return path


def packets_of(path: Path, kind: str) -> list[tuple[int, int]]:
    """(byte offset, size) of every non-empty packet of the first `kind` stream."""
    with av.open(str(path)) as c:
        return [(p.pos, p.size) for p in c.demux(getattr(c.streams, kind)[0]) if p.size and p.pos is not None]


def corrupt(src: Path, dst: Path, kind: str, where: str, count: int = 1, whole: bool = True, seed: int = 0) -> Path:
    """Copy `src` with `count` packet(s) of its `kind` stream (at its start / middle / end) overwritten by
    random bytes: the whole packet, or (`whole=False`, bit rot inside a frame) up to 64 bytes a quarter
    into it, which leaves h264's NAL framing intact so the decoder conceals the damage as ffmpeg does."""
    pk = packets_of(src, kind)
    i0 = {"start": 0, "middle": len(pk) // 2, "end": len(pk) - count}[where]
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    for pos, size in pk[i0 : i0 + count]:
        a, n = (pos, size) if whole else (pos + size // 4, min(64, size // 2))
        data[a : a + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def reference_errors(path: Path) -> dict[str, int]:
    """Packets a plain single-threaded PyAV pass fails to decode, per stream kind (what ffmpeg would log
    and skip)."""
    errors = {"video": 0, "audio": 0}
    with av.open(str(path)) as c:
        for p in c.demux(c.streams.video[0], c.streams.audio[0]):
            try:
                p.decode()
            except av.error.FFmpegError:
                errors[p.stream.type] += 1
    return errors


def remux(src: Path, dst: Path, start: float, seconds: float) -> Path:
    """[start, start + seconds) of `src` (video + first audio stream; `start` at a video keyframe),
    stream-copied (no re-encoding) with timestamps shifted to start at 0."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        vi, ai = inp.streams.video[0], inp.streams.audio[0]
        vo, ao = out.add_stream_from_template(vi), out.add_stream_from_template(ai)
        for p in inp.demux(vi, ai):
            if p.dts is None or p.pts is None or not start <= float(p.pts * p.time_base) < start + seconds:
                continue
            off = int(round(start / p.time_base))
            p.pts, p.dts = p.pts - off, p.dts - off
            p.stream = vo if p.stream is vi else ao
            out.mux(p)
    return dst


def source_peak(path: Path) -> float:
    """Largest absolute sample over all channels of the first audio stream at its own rate (no mixing)."""
    peak = 0.0
    with av.open(str(path)) as c:
        for fr in c.decode(c.streams.audio[0]):
            peak = max(peak, float(np.abs(fr.to_ndarray()).max()))
    return peak


@pytest.fixture(scope="module")
def avi(tmp_path_factory) -> Path:
    return write_xvid_ac3(tmp_path_factory.mktemp("avi") / "xvid_ac3.avi")


@pytest.fixture(scope="module")
def real_media(tmp_path_factory) -> dict[str, Path]:
    """Real footage, 3 s stream copies of: the Big Buck Bunny trailer (720p h264 + mp3 stereo; its loudest
    part, from the keyframe at 36 s) and a clip with 5.1 AAC."""
    if not (MEDIA / "bbb_trailer.mp4").is_file() or not (MEDIA / "bbb_5s_6ch.mp4").is_file():
        pytest.skip(f"real media not found under {MEDIA}")
    d = tmp_path_factory.mktemp("real")
    return {"stereo_mp3": remux(MEDIA / "bbb_trailer.mp4", d / "bbb_stereo.mp4", 36.0, 3.0),
            "aac_5.1": remux(MEDIA / "bbb_5s_6ch.mp4", d / "bbb_51.mp4", 0.0, 3.0)}


@pytest.fixture(scope="module")
def real_clean(real_media) -> dict[str, object]:
    return {k: decode_video(p, DecodeConfig(short_side=64)) for k, p in real_media.items()}


# ------------------------------------------------------------------------------------------ corruption


def assert_errors_match(found: dict[str, int], reference: dict[str, int], corrupted: int) -> None:
    """Every stream that has undecodable packets shows errors, at most as many as packets were damaged
    (frame-threaded video decoding may report two bad packets as one)."""
    for kind in ("video", "audio"):
        assert (found[kind] > 0) == (reference[kind] > 0), (kind, found, reference)
        assert found[kind] <= corrupted


def test_first_ac3_frame_corrupt_decodes_with_one_counted_error(avi, tmp_path):
    """The reported case: ffmpeg plays it and logs one error; the video must not be lost."""
    bad = corrupt(avi, tmp_path / "bad.avi", "audio", "start")
    assert reference_errors(bad) == {"video": 0, "audio": 1}
    clean, v = decode_video(avi), decode_video(bad)
    assert v.source["decode_errors"] == {"video": 0, "audio": 1}
    assert v.source["video_codec"] == "mpeg4" and v.source["audio_codec"] == "ac3"
    assert v.num_frames == clean.num_frames and v.audio.shape == clean.audio.shape
    # the lost first frame (32 ms) is silence, the rest in place: same clicks at the same times
    n = int(0.1 * 16000)
    np.testing.assert_allclose(v.audio[n:], clean.audio[n:], atol=0.02)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
@pytest.mark.parametrize("kind", ["video", "audio"])
def test_xvid_ac3_corrupt_packet_is_skipped(avi, tmp_path, kind, where):
    bad = corrupt(avi, tmp_path / f"{kind}_{where}.avi", kind, where, count=2)
    clean, v = decode_video(avi), decode_video(bad)
    assert_errors_match(v.source["decode_errors"], reference_errors(bad), 2)
    if kind == "audio":
        assert v.source["decode_errors"]["audio"] >= 1  # AC3 frames carry a sync word and CRCs
    assert abs(v.num_frames - clean.num_frames) <= 2
    assert v.audio.shape[0] == int(round(v.num_frames / v.fps * 16000))
    # audio after the damaged span is still in sync with the picture (silence fills the lost span)
    pk = packets_of(avi, "audio")
    if kind == "audio" and where == "middle":
        lost_end = (len(pk) // 2 + 2) * 1536 / RATE  # AC3: 1536 samples per frame
        a = int((lost_end + 0.1) * 16000)
        np.testing.assert_allclose(v.audio[a:], clean.audio[a : v.audio.shape[0]], atol=0.02)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
@pytest.mark.parametrize("kind", ["video", "audio"])
@pytest.mark.parametrize("name", ["stereo_mp3", "aac_5.1"])
def test_real_media_corrupt_packet_is_skipped(real_media, real_clean, tmp_path, name, kind, where):
    src = real_media[name]
    bad = corrupt(src, tmp_path / f"{kind}_{where}.mp4", kind, where, count=2, whole=kind == "audio")
    clean = real_clean[name]
    v = decode_video(bad, DecodeConfig(short_side=64))
    assert_errors_match(v.source["decode_errors"], reference_errors(bad), 2)
    assert abs(v.duration - clean.duration) <= 0.2
    assert v.audio is not None and v.audio.shape[0] == int(round(v.num_frames / v.fps * 16000))


def test_lost_only_keyframe_fails_with_the_count(real_media, tmp_path):
    """h264 cannot decode anything before its next keyframe; a clip whose only keyframe is destroyed has
    an unusable video stream (ffmpeg shows nothing either) and fails saying so."""
    bad = corrupt(real_media["aac_5.1"], tmp_path / "no_key.mp4", "video", "start")
    with pytest.raises(MediaError, match=r"no decodable video frames \(1 of \d+ packets failed"):
        decode_video(bad, DecodeConfig(short_side=64))


def test_unusable_stream_fails_the_video(avi, tmp_path):
    n_audio = len(packets_of(avi, "audio"))
    no_audio = corrupt(avi, tmp_path / "no_audio.avi", "audio", "start", count=n_audio)
    with pytest.raises(MediaError, match="audio stream unusable"):
        decode_video(no_audio)
    # a third of the video packets bad: decoded (frames held across them); above the configured share: unusable
    n_video = len(packets_of(avi, "video"))
    some = corrupt(avi, tmp_path / "some.avi", "video", "start", count=n_video // 3)
    assert decode_video(some).source["decode_errors"]["video"] == n_video // 3
    with pytest.raises(MediaError, match="video stream unusable"):
        decode_video(some, DecodeConfig(max_decode_error_fraction=0.2))


def test_curation_counts_decode_errors_per_stream(avi, tmp_path):
    src = tmp_path / "src" / "hammering"
    src.mkdir(parents=True)
    corrupt(avi, src / "first_ac3_bad.avi", "audio", "start")
    mid = corrupt(avi, src / "mid_ac3_bad.avi", "audio", "middle", count=3)
    (src / "clean.avi").write_bytes(avi.read_bytes())
    cfg = load_config(None, ["runner.kind=local", "balance.min_segments_per_class=0", "score_only=true"],
                      src=str(tmp_path / "src"), out=str(tmp_path / "out"))
    run(cfg, progress=False)
    t = pq.read_table(tmp_path / "out" / "inputs.parquet").to_pandas().set_index("video_id")
    assert set(t.status) == {"ok"}
    assert t.loc["first_ac3_bad", "audio_decode_errors"] == 1
    assert t.loc["mid_ac3_bad", "audio_decode_errors"] == reference_errors(mid)["audio"] >= 1
    assert t.loc["clean", "audio_decode_errors"] == 0 and (t.video_decode_errors == 0).all()
    assert "1 audio packet" in t.loc["first_ac3_bad", "reason"]


# ---------------------------------------------------------------------------------------------- downmix


def test_downmix_is_the_channel_average_without_lfe():
    x = np.array([[0.9, -0.5], [0.9, 0.5]], np.float32)
    np.testing.assert_allclose(downmix(x, ["FL", "FR"]), [0.9, 0.0], atol=1e-7)
    six = np.array([[0.6], [0.6], [0.6], [1.0], [0.6], [0.6]], np.float32)
    np.testing.assert_allclose(downmix(six, ["FL", "FR", "FC", "LFE", "BL", "BR"]), [0.6], atol=1e-7)


def test_identical_stereo_at_peak_09_stays_at_09(tmp_path):
    t = np.arange(int(3.0 * RATE)) / RATE
    tone = (0.9 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = write_xvid_ac3(tmp_path / "tone.avi", 3.0, np.stack([tone, tone]))
    peak_in = source_peak(path)
    peak = float(np.abs(decode_video(path).audio).max())
    assert peak <= 1.02 * peak_in  # a 1/sqrt(2)-scaled sum gives ~1.27
    assert peak >= 0.95 * peak_in
    half = write_xvid_ac3(tmp_path / "left.avi", 3.0, np.stack([tone, np.zeros_like(tone)]))
    assert float(np.abs(decode_video(half).audio).max()) == pytest.approx(0.5 * peak_in, rel=0.05)


@pytest.mark.parametrize("name", ["stereo_mp3", "aac_5.1"])
def test_real_media_mono_peak_never_exceeds_the_source(real_media, real_clean, name):
    path = real_media[name]
    v = real_clean[name]
    assert v.source["audio_channels"] == (2 if name == "stereo_mp3" else 6)
    peak_in, peak = source_peak(path), float(np.abs(v.audio).max())
    assert peak > 0.1 * peak_in  # real signal (the 5.1 clip is mostly centre dialogue: mono = centre / 5)
    assert peak <= 1.02 * peak_in  # 2 % for the resampler's filter ripple


def test_audio_track_survives_a_layout_change_and_fills_gaps():
    """A corrupt header can change the channel layout mid-stream; a skipped packet leaves a time gap."""
    from media.decode import _AudioTrack

    def frame(t: float, layout: str, value: float, n: int = 1600, rate: int = 16000):
        ch = len(av.AudioLayout(layout).channels)
        fr = av.AudioFrame.from_ndarray(np.full((ch, n), value, np.float32), format="fltp", layout=layout)
        fr.sample_rate, fr.time_base, fr.pts = rate, Fraction(1, rate), int(round(t * rate))
        return fr

    track = _AudioTrack(16000)
    track.add(frame(0.0, "stereo", 0.5))
    track.add(frame(0.1, "5.1", 0.25))  # layout change
    track.add(frame(0.3, "stereo", 0.5))  # 0.1 s lost before it
    a = track.finish()
    assert track.t0 == 0.0
    assert a.shape[0] == pytest.approx(0.4 * 16000, abs=64)
    assert np.abs(a[int(0.22 * 16000) : int(0.28 * 16000)]).max() < 1e-3  # the gap is silence
    assert a[int(0.15 * 16000)] == pytest.approx(0.25, abs=0.02)  # 5.1 at 0.25 on every channel -> 0.25
    assert a[int(0.35 * 16000)] == pytest.approx(0.5, abs=0.02)
