"""Look families of synthetic sounding videos: synchronization without a cue shared by every family.

The first generator (`synthetic.py`, family "flash") lit every event object up at its events; a
classifier trained on it learned that flash, not synchronization. Here each family shows audio events
in a different visual way, and nothing is common to all families except *when* something changes:

- "motion":     an object at rest starts moving at the event (abrupt onset, smooth ease-out stop);
- "contact":    a ball falls/accelerates into a surface (floor, wall or ceiling, any side) and rebounds
                at the event, or a striker swings into a plate and back; optional squash at contact;
- "deform":     an object squashes, stretches, grows or shrinks at the event and relaxes back;
- "appearance": an object changes colour, shape or pattern, or appears / disappears, at the event
                (a step, no brightness pulse: new colours are drawn at random, darker or lighter);
- "camera":     the whole view jolts (decaying shake in a random direction) at the event; the scene
                objects themselves do nothing at the events;
- "multi":      2-3 sounding objects with their own events and sounds (any of the object families)
                plus silent objects that have events of their own.

Shared by every family, as distractors: random backgrounds (gradients, blocky texture, or moving real
footage when a real-media folder is given), 0-2 objects drifting smoothly, sometimes a silent object
with abrupt events of its own (events not in the audio), slow camera pans, pixel noise; audio events
are real drum one-shots, pieces of a real speech recording (when given) or synthesized hits, over a
hum, a noise floor and sometimes quiet unrelated real sound. Event gaps are random (0.3-1.1 s), so a
window's event pattern is unique and the offset can only be found by matching events in time.

`make_family_video(seed, family)` returns a `media.decode.DecodedVideo` and the sorted event times
of the sounding streams (the silent objects' event times are in the video's `source["silent_events"]`);
`RealMedia` holds decoded real footage and sounds (`load_real_media(dir)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from media.decode import DecodedVideo

from .synthetic import SHAPES, _background, _color, _event_times, _mask, _synth_hit, drum_samples, make_sounding_video

FAMILIES = ("motion", "contact", "deform", "appearance", "camera", "multi")
"""The training mix (no cue shared by all). "flash" (the first generator) can be named explicitly."""
ALL_FAMILIES = FAMILIES + ("flash",)
OBJECT_FAMILIES = ("motion", "contact", "deform", "appearance")


@dataclass
class RealMedia:
    """Real footage (uint8 [T, H, W, 3] at `fps`, short side ~2x the clip size) and real sounds."""

    frames: np.ndarray | None
    fps: float
    audio: np.ndarray | None
    """The footage's own sound track (mono, used only as quiet unrelated background sound)."""
    speech: np.ndarray | None
    """A speech recording: pieces of it are event sounds."""
    drums: tuple[np.ndarray, ...]


@lru_cache(maxsize=2)
def load_real_media(directory: str, size: int, audio_rate: int) -> RealMedia:
    """Decode the real media of a folder once: the first video (frames at short side 2 * size, <= 12 fps),
    the first .wav as speech, *.ogg / *.wav one-shots under drums/. Missing parts are None / empty."""
    import soundfile as sf

    from media.decode import DecodeConfig, decode_video

    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"real media folder {directory!r} does not exist")
    frames, fps, audio = None, 12.0, None
    vids = sorted(p for p in d.iterdir() if p.suffix.lower() in (".mp4", ".mkv", ".webm", ".mov"))
    vids.sort(key=lambda p: -p.stat().st_size)  # the longest footage first
    if vids:
        v = decode_video(vids[0], DecodeConfig(short_side=2 * size, max_fps=12.0, audio_rate=audio_rate))
        frames, fps, audio = v.frames, v.fps, v.audio

    def read(p):
        x, sr = sf.read(str(p), dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        if sr != audio_rate:
            import librosa

            x = librosa.resample(x, orig_sr=sr, target_sr=audio_rate)
        return (x / max(1e-6, float(np.abs(x).max()))).astype(np.float32)

    wavs = sorted(d.glob("*.wav"))
    speech = read(wavs[0]) if wavs else None
    drums = tuple(read(p)[: audio_rate // 2] for p in sorted((d / "drums").glob("*.ogg"))) if (d / "drums").is_dir() else ()
    return RealMedia(frames, fps, audio, speech, drums)


# ---------------------------------------------------------------------------------------- sounds


def _event_sound(rng, rate: int, media: RealMedia | None) -> np.ndarray:
    """One sound for a stream's events: a drum one-shot, a piece of speech, or a synthesized hit."""
    drums = (media.drums if media is not None and media.drums else ()) or drum_samples(rate)
    r = rng.random()
    if media is not None and media.speech is not None and r < 0.3:
        n = int(rng.uniform(0.12, 0.35) * rate)
        sp = media.speech
        # start at a loud sample so the piece has an onset
        for _ in range(8):
            a = int(rng.integers(0, max(1, len(sp) - n)))
            if np.abs(sp[a : a + int(0.03 * rate)]).max(initial=0) > 0.2:
                break
        x = sp[a : a + n].copy()
        x[: int(0.003 * rate)] *= np.linspace(0, 1, int(0.003 * rate))
        fade = min(len(x), int(0.04 * rate))
        x[len(x) - fade :] *= np.linspace(1, 0, fade)
        return x / max(1e-6, float(np.abs(x).max()))
    if drums and r < 0.65:
        return drums[rng.integers(len(drums))]
    return _synth_hit(rng, rate)


# ---------------------------------------------------------------------------------------- objects


def _new_object(rng, size: int, behaviour: str, events: np.ndarray) -> dict:
    r = size * rng.uniform(0.09, 0.18)
    o = dict(
        behaviour=behaviour, events=events, r=r, shape=SHAPES[rng.integers(len(SHAPES))], color=_color(rng),
        cx=size * rng.uniform(0.25, 0.75), cy=size * rng.uniform(0.25, 0.75), stripes=rng.random() < 0.3,
        stripe_color=_color(rng),
    )
    if behaviour == "motion":
        # positions after each event: the object dashes to a new place, fastest right at the event
        pts = [(o["cx"], o["cy"])]
        for _ in events:
            px, py = pts[-1]
            ang = rng.uniform(0, 2 * np.pi)
            dist = size * rng.uniform(0.12, 0.35)
            nx = float(np.clip(px + dist * np.cos(ang), r, size - r))
            ny = float(np.clip(py + dist * np.sin(ang), r, size - r))
            pts.append((nx, ny))
        o["pts"] = pts
        o["tau"] = rng.uniform(0.06, 0.2)
    elif behaviour == "contact":
        o["variant"] = "striker" if rng.random() < 0.3 else "ball"
        o["side"] = int(rng.integers(4))  # surface: 0 bottom, 1 top, 2 left, 3 right
        o["amp"] = size * rng.uniform(0.2, 0.4)
        o["squash"] = rng.random() < 0.6
        o["surface_color"] = _color(rng)
        o["along"] = size * rng.uniform(0.25, 0.75)
    elif behaviour == "deform":
        o["mode"] = ["grow", "shrink", "squash", "stretch"][rng.integers(4)]
        o["amount"] = rng.uniform(0.4, 0.8)
        o["tau"] = rng.uniform(0.15, 0.35)  # visible in at least one frame at 6 fps
    elif behaviour == "appearance":
        o["mode"] = ["color", "shape", "pattern", "toggle", "color"][rng.integers(5)]
        o["palette"] = [_color(rng) for _ in range(6)]
        o["shapes"] = [SHAPES[i] for i in rng.permutation(len(SHAPES))]
    return o


def _object_state(o: dict, t: float, size: int):
    """(cx, cy, rx, ry, color, shape, visible, stripes) of an object at time t."""
    ev = o["events"]
    k = int(np.searchsorted(ev, t, side="right"))
    tp = ev[k - 1] if k > 0 else -np.inf
    tn = ev[k] if k < len(ev) else np.inf
    cx, cy, r, color, shape, stripes = o["cx"], o["cy"], o["r"], o["color"], o["shape"], o["stripes"]
    rx = ry = r
    b = o["behaviour"]
    if b == "motion":
        (px, py), (nx, ny) = o["pts"][k - 1] if k > 0 else o["pts"][0], o["pts"][k] if k > 0 else o["pts"][0]
        f = 1 - np.exp(-(t - tp) / o["tau"]) if np.isfinite(tp) else 0.0
        cx, cy = px + (nx - px) * f, py + (ny - py) * f
    elif b == "contact":
        a, c = (tp if np.isfinite(tp) else t - 0.6), (tn if np.isfinite(tn) else t + 0.6)
        g = max(c - a, 1e-3)
        if o["variant"] == "ball":  # parabola between contacts: accelerates into the surface
            h = 4 * (t - a) * (c - t) / g**2 * o["amp"] * min(1.0, g / 0.9)
        else:  # striker: lifts quickly after the hit, then swings down, accelerating, into the next one
            u = (t - a) / g
            h = o["amp"] * (np.sin(np.pi * min(1.0, u / 0.3) / 2) if u < 0.3 else (1 - ((u - 0.3) / 0.7) ** 2))
        near = min(t - a, c - t) < 0.05 and o["squash"]
        along, off = o["along"], r + 2 + h
        sq = (1.3, 0.7) if near else (1.0, 1.0)
        if o["variant"] == "striker":
            sq = (1.5, 0.6)
            shape = "square"
        side = o["side"]
        if side == 0:
            cx, cy, rx, ry = along, size - off, r * sq[0], r * sq[1]
        elif side == 1:
            cx, cy, rx, ry = along, off, r * sq[0], r * sq[1]
        elif side == 2:
            cx, cy, rx, ry = off, along, r * sq[1], r * sq[0]
        else:
            cx, cy, rx, ry = size - off, along, r * sq[1], r * sq[0]
        if near and o["squash"]:  # squashed against the surface
            if side == 0:
                cy = size - 2 - ry
            elif side == 1:
                cy = 2 + ry
            elif side == 2:
                cx = 2 + rx
            else:
                cx = size - 2 - rx
    elif b == "deform":
        p = np.exp(-(t - tp) / o["tau"]) if np.isfinite(tp) else 0.0
        m, amt = o["mode"], o["amount"]
        if m == "grow":
            rx = ry = r * (1 + amt * p)
        elif m == "shrink":
            rx = ry = r * (1 - 0.7 * amt * p)
        elif m == "squash":
            rx, ry = r * (1 + amt * p), r * (1 - 0.6 * amt * p)
        else:
            rx, ry = r * (1 - 0.6 * amt * p), r * (1 + amt * p)
    elif b == "appearance":
        m = o["mode"]
        if m == "color":
            color = o["palette"][k % len(o["palette"])]
        elif m == "shape":
            shape = o["shapes"][k % len(o["shapes"])]
            color = o["palette"][k % 2]
        elif m == "pattern":
            stripes = bool(k % 2)
        else:  # toggle: visible on odd event counts
            return cx, cy, rx, ry, color, shape, bool(k % 2), stripes
    return cx, cy, rx, ry, color, shape, True, stripes


def _draw(img, xx, yy, o, state):
    cx, cy, rx, ry, color, shape, visible, stripes = state
    if not visible:
        return
    m = _mask(shape, xx - cx, yy - cy, max(rx, 0.5), max(ry, 0.5))
    img[m] = color
    if stripes:
        s = m & (((xx - cx + yy - cy) // max(2.0, o["r"] / 2)) % 2 == 0)
        img[s] = o["stripe_color"]


def _shake(events: np.ndarray, t: float, amp: float, tau: float, freq: float, direction: np.ndarray) -> np.ndarray:
    k = int(np.searchsorted(events, t, side="right"))
    if k == 0:
        return np.zeros(2)
    dt = t - events[k - 1]
    return direction[k - 1] * amp * np.exp(-dt / tau) * np.cos(2 * np.pi * freq * dt)


# ---------------------------------------------------------------------------------------- videos


def make_family_video(
    seed: int,
    family: str = "motion",
    duration: float = 8.0,
    size: int = 64,
    fps: float = 24.0,
    audio_rate: int = 16000,
    media: RealMedia | None = None,
) -> tuple[DecodedVideo, np.ndarray]:
    """One sounding video of a look family (deterministic in seed, family and media) and its event times."""
    if family == "flash":
        return make_sounding_video(seed, duration=duration, size=size, fps=fps, audio_rate=audio_rate)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(ALL_FAMILIES)}")
    rng = np.random.default_rng([seed, ALL_FAMILIES.index(family)])
    n_frames = int(round(duration * fps))
    n_samples = int(round(duration * audio_rate))
    margin = max(2, size // 6)
    canvas = size + 2 * margin
    yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float32) + 0.5

    # sounding streams
    if family == "multi":
        kinds = list(rng.choice(OBJECT_FAMILIES, size=int(rng.integers(2, 4)), replace=True))
        gaps = (0.5, 1.6)
    else:
        kinds = [family]
        gaps = (0.3, 1.1)
    streams = []
    for kind in kinds:
        ev = _event_times(rng, duration, *gaps)
        if kind == "camera":
            streams.append(dict(behaviour="camera", events=ev))
        else:
            streams.append(_new_object(rng, canvas, kind, ev))

    # silent distractors: smooth drifters and objects with events of their own
    drifters = [
        dict(shape=SHAPES[rng.integers(4)], color=_color(rng), r=canvas * rng.uniform(0.04, 0.1),
             ax=canvas * rng.uniform(0.1, 0.3), ay=canvas * rng.uniform(0.05, 0.3), wx=rng.uniform(0.2, 1.0),
             wy=rng.uniform(0.2, 1.0), ph=rng.uniform(0, 6.3), cx=canvas * rng.uniform(0.3, 0.7), cy=canvas * rng.uniform(0.3, 0.7))
        for _ in range(int(rng.integers(0, 3)))
    ]
    n_silent = int(rng.integers(1, 3)) if family == "multi" else int(rng.random() < 0.25)
    silent = [_new_object(rng, canvas, OBJECT_FAMILIES[rng.integers(4)], _event_times(rng, duration, 0.5, 1.6)) for _ in range(n_silent)]
    # static scenery (what a camera jolt visibly moves): 2-4 objects in the camera family, else 0-2
    n_static = int(rng.integers(2, 5)) if family == "camera" else int(rng.integers(0, 3))
    scenery = [_new_object(rng, canvas, "static", np.zeros(0)) for _ in range(n_static)]
    objects = [s for s in streams if s["behaviour"] != "camera"]
    # draw order random so sounding objects are not always on top
    layers = objects + silent
    order = rng.permutation(len(layers))

    # camera: jolts at the camera stream's events, plus an optional slow pan everywhere
    cam = next((s for s in streams if s["behaviour"] == "camera"), None)
    if cam is not None:
        ang = rng.uniform(0, 2 * np.pi, len(cam["events"]))
        cam_dir = np.stack([np.cos(ang), np.sin(ang)], axis=1)
        cam_amp, cam_tau, cam_freq = margin * rng.uniform(0.6, 0.95), rng.uniform(0.15, 0.35), rng.uniform(1.5, 4.0)
    pan = rng.uniform(-1, 1, 2) * margin * 0.5 / max(duration, 1e-3) if rng.random() < 0.25 else np.zeros(2)

    # background: real footage (moving, with cuts) or a random still
    real_bg = None
    if media is not None and media.frames is not None and rng.random() < 0.4:
        mf = media.frames
        span = int(np.ceil(duration * media.fps)) + 1
        f0 = int(rng.integers(0, max(1, len(mf) - span)))
        h, w = mf.shape[1:3]
        cs = min(h, w, int(canvas * rng.uniform(1.0, 2.0)))
        y0, x0 = int(rng.integers(0, h - cs + 1)), int(rng.integers(0, w - cs + 1))
        real_bg = (mf, f0, y0, x0, cs)
        bg = None
    else:
        bg = _background(rng, canvas)
    noise_amp = rng.uniform(0, 4)

    frames = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    for i in range(n_frames):
        t = i / fps
        if real_bg is not None:
            mf, f0, y0, x0, cs = real_bg
            src = mf[min(len(mf) - 1, f0 + int(t * media.fps)), y0 : y0 + cs, x0 : x0 + cs]
            idx = (np.arange(canvas) * cs // canvas).astype(np.int64)
            img = src[idx][:, idx].astype(np.float32)
        else:
            img = bg.copy()
        for o in (s for s in streams if s["behaviour"] == "contact"):  # the surfaces
            th = max(1, canvas // 24)
            side, al, rr = o["side"], int(o["along"]), int(2.2 * o["r"])
            sl = slice(max(0, al - rr), al + rr)
            if side == 0:
                img[canvas - th :, sl] = o["surface_color"]
            elif side == 1:
                img[:th, sl] = o["surface_color"]
            elif side == 2:
                img[sl, :th] = o["surface_color"]
            else:
                img[sl, canvas - th :] = o["surface_color"]
        for d in drifters:
            x = d["cx"] + d["ax"] * np.sin(2 * np.pi * d["wx"] * t + d["ph"])
            y = d["cy"] + d["ay"] * np.sin(2 * np.pi * d["wy"] * t + 2 * d["ph"])
            img[_mask(d["shape"], xx - x, yy - y, d["r"], d["r"])] = d["color"]
        for o in scenery:  # behind everything else
            _draw(img, xx, yy, o, _object_state(o, t, canvas))
        for j in order:
            o = layers[j]
            _draw(img, xx, yy, o, _object_state(o, t, canvas))
        off = pan * t
        if cam is not None:
            off = off + _shake(cam["events"], t, cam_amp, cam_tau, cam_freq, cam_dir)
        oy = int(np.clip(round(margin + off[1]), 0, 2 * margin))
        ox = int(np.clip(round(margin + off[0]), 0, 2 * margin))
        img = img[oy : oy + size, ox : ox + size]
        if noise_amp > 0:
            img = img + rng.normal(0, noise_amp, img.shape)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)

    audio = np.zeros(n_samples + audio_rate, dtype=np.float32)
    for s in streams:
        hit = _event_sound(rng, audio_rate, media)
        for t in s["events"]:
            a = int(round(t * audio_rate))
            audio[a : a + len(hit)] += hit * rng.uniform(0.5, 1.0)
    audio = audio[:n_samples]
    peak = max(1e-6, float(np.abs(audio).max()))
    tt = np.arange(n_samples) / audio_rate
    audio += peak * rng.uniform(0, 0.1) * np.sin(2 * np.pi * rng.uniform(50, 300) * tt).astype(np.float32)
    audio += peak * rng.uniform(0, 0.03) * rng.standard_normal(n_samples).astype(np.float32)
    if media is not None and media.audio is not None and rng.random() < 0.3:  # quiet unrelated real sound
        a0 = int(rng.integers(0, max(1, len(media.audio) - n_samples)))
        bgs = media.audio[a0 : a0 + n_samples]
        audio[: len(bgs)] += peak * rng.uniform(0.03, 0.15) * bgs / max(1e-6, float(np.abs(bgs).max()))
    audio *= rng.uniform(0.3, 0.9) / max(1e-6, float(np.abs(audio).max()))

    events = np.sort(np.concatenate([s["events"] for s in streams]))
    silent_events = np.sort(np.concatenate([o["events"] for o in silent] or [np.zeros(0)]))
    source = {"synthetic_seed": int(seed), "family": family, "kinds": kinds, "width": size, "height": size, "fps": fps,
              "real_background": real_bg is not None, "silent_events": [float(t) for t in silent_events]}
    return DecodedVideo(frames, float(fps), audio.astype(np.float32), int(audio_rate), source), events


__all__ = ["FAMILIES", "ALL_FAMILIES", "RealMedia", "load_real_media", "make_family_video"]
