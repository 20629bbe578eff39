"""A ceiling for timing-only sync on the synthetic look families: an oracle that knows every event time.

    python bench/sync_event_oracle.py [--videos 32] [--seed 1000050000] [--families ...] [--sigma 0.06]

Where `bench/sync_change_matcher.py` is a floor (no learning, global picture change), this is the other end:
it is given the generator's event times instead of the pixels and the sound, and asks how well the offset can
be found from *when* things happen, with the evaluation's own windows, offsets and tolerance.

- Audio: the sounding events inside an audio clip, at their exact times (an onset detector at the 10 ms mel hop
  is that precise).
- Video: each visual event is seen at the first of the clip's 12 frames (6 fps) that shows it, and placed half a
  frame period before that frame. `blind` sees the events of every object, the silent ones included, without
  knowing which objects sound (what a matcher of visual and sound onsets can know); `known` sees only the
  sounding objects' events (it also knows which object makes the sound).
- phi(a, v) = sum over the audio clip's events of (2 m - 1), m = exp(-d^2 / 2 sigma^2) for the nearest visual
  event at distance d: +1 for an audio event matched in time, -1 for one with no visible cause. Ties are broken
  at random (seeded).

The [K, K] phi matrix of each video (31 offsets of 0.04 s around its middle, as `sync_classifier.evaluate`) is
scored by `sync_classifier.evaluate.scores`, both protocols. The default seed is the one `bench/sync_lofo.py`
tests its held-out families on. A learnt classifier also has to find the events in 32 px frames among moving
backgrounds, drifting objects, pans and pixel noise, which the oracle is spared: the gap between a checkpoint
and this ceiling is what better event detection could still win.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync_classifier.config import small  # noqa: E402
from sync_classifier.data import EVAL_SEED_BASE, clip_offsets  # noqa: E402
from sync_classifier.evaluate import EVAL_OFFSETS, EVAL_STEP, EVAL_TOLERANCE, PROTOCOLS, chance_level, scores  # noqa: E402
from sync_classifier.families import ALL_FAMILIES, make_family_video  # noqa: E402


def seen_events(events: np.ndarray, start: float, fps: float, num_frames: int) -> np.ndarray:
    """Clip-local times at which a 6 fps clip starting at `start` can place the events it shows: each event
    goes to the first frame at or after it, minus half a frame period."""
    i = np.ceil((np.asarray(events) - start) * fps - 1e-9)
    i = i[(i >= 0) & (i < num_frames)]
    return (i - 0.5) / fps


def match_score(audio_events: np.ndarray, visual_events: np.ndarray, sigma: float) -> float:
    if len(audio_events) == 0:
        return 0.0
    if len(visual_events) == 0:
        return -float(len(audio_events))
    m = np.exp(-0.5 * ((audio_events[:, None] - visual_events[None, :]) / sigma) ** 2).max(axis=1)
    return float((2 * m - 1).sum())


def oracle_phi(sounding: np.ndarray, visible: np.ndarray, center: float, offsets: np.ndarray, spec, sigma: float,
               rng: np.random.Generator) -> torch.Tensor:
    """[K, K] phi(audio clip i, video clip j) around center, from event times."""
    starts = center + offsets - spec.duration / 2
    audio = [sounding[(sounding >= s) & (sounding < s + spec.duration)] - s for s in starts]
    video = [seen_events(visible, s, spec.fps, spec.num_frames) for s in starts]
    phi = np.array([[match_score(a, v, sigma) for v in video] for a in audio])
    return torch.from_numpy(phi + rng.uniform(0, 1e-6, phi.shape))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=32, help="held-out videos per family")
    p.add_argument("--seed", type=int, default=EVAL_SEED_BASE + 50_000, help="first synthetic seed (as bench/sync_lofo.py)")
    p.add_argument("--families", default=",".join(ALL_FAMILIES), help="comma-separated look families")
    p.add_argument("--sigma", type=float, default=0.06, help="seconds: how close an audio and a visual event must be to match")
    p.add_argument("--duration", type=float, default=4.0, help="seconds of each synthetic video (as the evaluation's)")
    a = p.parse_args(argv)
    if a.videos < 1 or a.sigma <= 0:
        p.error("--videos must be >= 1 and --sigma > 0")
    unknown = [f for f in a.families.split(",") if f not in ALL_FAMILIES]
    if unknown:
        p.error(f"unknown family {unknown[0]!r}; known: {', '.join(ALL_FAMILIES)}")
    spec = small().model.spec
    offsets = clip_offsets(EVAL_OFFSETS, EVAL_STEP)
    rng = np.random.default_rng(0)
    print(f"{'family':<12} {'mode':<6} {'asva a2v':>9} {'asva v2a':>9} {'all a2v':>8} {'all v2a':>8}   ({a.videos} videos each)")
    for fam in a.families.split(","):
        per = {"blind": {q: [] for q in PROTOCOLS}, "known": {q: [] for q in PROTOCOLS}}
        for i in range(a.videos):
            # pixels at 16 px: only the event times are used
            v, sounding = make_family_video(a.seed + i, fam, duration=a.duration, size=16, fps=24.0)
            silent = np.asarray(v.source.get("silent_events", []), dtype=np.float64)
            for mode, visible in (("blind", np.sort(np.concatenate([sounding, silent]))), ("known", sounding)):
                s = scores(oracle_phi(sounding, visible, v.duration / 2, offsets, spec, a.sigma, rng), EVAL_TOLERANCE)
                for q in PROTOCOLS:
                    per[mode][q].append(s[q])
        for mode, r in per.items():
            m = {q: 100 * np.asarray(r[q]).mean(axis=0) for q in PROTOCOLS}
            print(f"{fam:<12} {mode:<6} {m['asva'][0]:8.1f}% {m['asva'][1]:8.1f}% {m['all'][0]:7.1f}% {m['all'][1]:7.1f}%",
                  flush=True)
    print(f"chance: asva {100 * chance_level(EVAL_OFFSETS, EVAL_TOLERANCE, 'asva'):.1f} %, "
          f"all {100 * chance_level(EVAL_OFFSETS, EVAL_TOLERANCE, 'all'):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
