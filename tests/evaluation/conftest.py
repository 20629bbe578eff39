"""Fixtures: synthetic sounding clips with known event times, tiny feature extractors, generated-sample folders."""

from __future__ import annotations

import pytest
import torch

from tests.evaluation.eval_helpers import event_clip, write_mp4

torch.set_num_threads(1)  # 2 threads on a shared 2-core box thrash


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory):
    """Reference shard of 3 labelled 3 s segments; a generated folder: per segment one 2 s sample with a sidecar
    (the first synced, the second with its audio 0.5 s late, the third a copy of its reference clip), one sample
    without a sidecar, one unreadable mp4."""
    import json

    from media.decode import DecodedVideo
    from media.shards import write_shard

    root = tmp_path_factory.mktemp("evaldata")
    events = [[4, 12, 22], [6, 14, 25], [3, 9, 18]]
    segs = []
    for i, ev in enumerate(events):
        f, a = event_clip(ev, fps=10.0, seconds=3.0, seed=i)
        segs.append((f"seg{i}", DecodedVideo(f, 10.0, a, 16000), {"label": "hitting drum"}))
    write_shard(root / "test-000000.tar", segs)
    gen = root / "gen"
    for i, ev in enumerate(events):
        f, a = event_clip([e for e in ev if e < 20], fps=10.0, seconds=2.0, seed=i, audio_shift=0.5 if i == 1 else 0.0)
        write_mp4(gen / f"seg{i}_s0.mp4", f, a, 10.0)
        (gen / f"seg{i}_s0.json").write_text(json.dumps({"reference": f"seg{i}", "clip_start": 0.0, "random_weights": True}))
    f, a = event_clip([5, 15], fps=10.0, seconds=2.0, seed=9)
    write_mp4(gen / "lonely.mp4", f, a, 10.0)
    (gen / "broken.mp4").write_bytes(b"not a video")
    return root
