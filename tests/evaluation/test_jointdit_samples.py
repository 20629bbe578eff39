"""Evaluation of samples from the tiny random-init JointDiT, end to end (jointdit protocol, every number flagged).

The samples are generated here with the real sampling path (`train.sample_jointdit.generate` on the tiny
experts of `train.experts`), written as the sampler writes them (mp4 with audio) plus the sidecar
docs/evaluation.md defines.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.evaluation.eval_helpers import TINY, event_clip, write_mp4


def _write_png(path, image):
    import av

    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = image.shape[1], image.shape[0], "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def jointdit_samples(tmp_path_factory):
    from media.decode import DecodedVideo
    from media.shards import write_shard
    from train.data import ClipSpec
    from train.experts import build_jointdit, load_experts, write_tiny_experts
    from train.sample_jointdit import generate, load_image

    root = tmp_path_factory.mktemp("jointdit_eval")
    refs = []
    for i in range(2):
        f, a = event_clip([3, 9, 15], fps=7.0, seconds=3.0, seed=i)
        refs.append((f"test{i}", DecodedVideo(f, 7.0, a, 16000), {"label": "hitting"}))
    write_shard(root / "test-000000.tar", refs)
    torch.manual_seed(0)
    vunet, aunet, frozen = load_experts(*write_tiny_experts(root / "experts", seed=0))
    model = build_jointdit(vunet, aunet, frozen, "tiny")
    spec = ClipSpec(height=16, width=16)
    gen = root / "gen"
    gen.mkdir()
    images = []
    for key, video, _ in refs:
        png = gen / f"{key}.png"
        _write_png(png, video.frames[0])
        images.append(load_image(str(png), spec.height, spec.width))
    batch = torch.cat([im for im in images for _ in range(3)])  # 3 samples per test image (GreatestHits count)
    frames, wav = generate(model, frozen, batch, spec, "jointcfg_star", 1.5, 2, seed=0)
    for j in range(len(batch)):
        key = refs[j // 3][0]
        name = f"{key}_sample{j % 3}"
        write_mp4(gen / f"{name}.mp4", frames[j], np.clip(wav[j], -1, 1), spec.fps, spec.audio_rate)
        (gen / f"{name}.json").write_text(json.dumps({"reference": key, "clip_start": 0.0, "image": f"{key}.png",
                                                      "label": "hitting", "random_weights": True}))
    return root, frames.shape


def test_tiny_jointdit_samples_evaluate_end_to_end(jointdit_samples, tmp_path):
    import pyarrow.parquet as pq

    from pipelines.evaluate import main

    root, shape = jointdit_samples
    assert shape[1:] == (14, 16, 16, 3)
    rc = main(["--generated", str(root / "gen"), "--reference", str(root / "test-*.tar"), "--protocol", "jointdit",
               "--metrics", "all", "--out", str(tmp_path), "--no-progress", "--allow-random-weights",
               "dataset=greatesthits"] + TINY)
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["protocol"]["name"] == "jointdit" and m["protocol"]["num_frames"] == 14
    assert m["counts"]["generated_decoded"] == 6 and m["counts"]["paired"] == 6 and m["counts"]["reference_clips"] == 2
    assert not any("generated samples each" in w for w in m["warnings"])  # 3 per test image, as the protocol says
    assert m["generator_random_weights"] and any("random-init generator" in w for w in m["warnings"])
    for k in ("fvd", "kvd", "fid", "fad", "kl", "ia", "it", "ib_va", "ib_iv", "ib_ia", "relsync", "alignsync"):
        assert m["metrics"][k]["random_weights"] and m["metrics"][k]["value"] is not None, k
    assert m["metrics"]["fvd"]["n_generated"] == 6 and m["metrics"]["relsync"]["n_generated"] == 6
    rows = pq.read_table(tmp_path / "per_sample.parquet").to_pylist()
    assert {r["image_source"] for r in rows} == {"sidecar"} and all(r["skipped"] is None for r in rows)
    assert all(0.0 <= r["relsync"] <= 1.0 and np.isfinite(r["motion"]) for r in rows)
