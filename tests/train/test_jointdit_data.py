"""JointDiT data at scale: the rank x worker split of shards, the restart position, and latent caches that
draw a new clip / posterior sample / noise augmentation every epoch."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from media.shards import split_for_reader, write_tar_atomic
from media.stream import ShardStream, batches_of_worker


class KeyStream(ShardStream):
    """Keys only (no media): the ordering and splitting logic of every training dataset."""

    def decode(self, raw, rng):
        return {"draw": rng.random()}


def key_shards(d, sizes: list[int]) -> list[str]:
    """Shards of tiny json-only samples; sizes[i] samples in shard i; keys s{i}k{j}."""
    urls = []
    for i, n in enumerate(sizes):
        url = d / f"train-{i:06d}.tar"
        write_tar_atomic(url, [(f"s{i}k{j}.json", json.dumps({"i": i, "j": j}).encode()) for j in range(n)])
        urls.append(str(url))
    return urls


def test_split_for_reader_shards_or_samples():
    urls = [f"u{i}" for i in range(5)]
    got = [split_for_reader(urls, r, 2, w, 2) for r in range(2) for w in range(2)]
    assert [g.urls for g in got] == [["u0", "u4"], ["u1"], ["u2"], ["u3"]] and all(g.stride == 1 for g in got)
    few = [split_for_reader(urls[:3], r, 2, w, 2) for r in range(2) for w in range(2)]
    assert all(g.urls == urls[:3] and g.stride == 4 for g in few) and [g.offset for g in few] == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        split_for_reader(urls, 2, 2, 0, 2)


@pytest.mark.parametrize("sizes", [[3, 1, 2, 2, 1], [4, 3, 2]], ids=["more-shards-than-readers", "fewer-shards"])
@pytest.mark.parametrize("shuffle", [0, 3])
def test_every_sample_once_per_epoch_over_ranks_and_workers(tmp_path, sizes, shuffle):
    """Exact mode, one round per reader (N // readers samples each): disjoint between readers; over two
    rounds a new order. (Several epochs: tests/train/test_data_modes.py.)"""
    urls = key_shards(tmp_path, sizes)
    total = sum(sizes)
    seen: Counter = Counter()
    orders = {}
    for rank in range(2):
        ds = KeyStream(urls, shuffle=shuffle, seed=7, rank=rank, world_size=2, mode="exact")
        for worker in range(2):
            it = ds.iter_reader(worker, 2)
            n = ds.epoch_length(ds.epoch_split(0, worker, 2))
            assert n == total // 4
            first = [next(it)["key"] for _ in range(n)]
            second = [next(it)["key"] for _ in range(ds.epoch_length(ds.epoch_split(1, worker, 2)))]
            seen.update(first)
            orders[rank, worker] = (first, second)
    assert len(seen) == 4 * (total // 4) and max(seen.values()) == 1  # disjoint
    if shuffle:  # a new order (and, with shard splitting, new shards per reader) each epoch
        assert any(a != b for a, b in orders.values())


@pytest.mark.parametrize("mode,shuffle", [("exact", 4), ("exact", 0), ("resampled", 4)])
def test_restart_position_matches_the_uninterrupted_loader(tmp_path, mode, shuffle):
    """Two DataLoader workers, batch 2: a loader restarted after 5 batches yields what the uninterrupted
    one yielded from batch 5 on (keys and per-sample random draws), across an epoch boundary."""
    urls = key_shards(tmp_path, [3, 4, 2, 3])

    def batches(start, n):
        ds = KeyStream(urls, shuffle=shuffle, seed=1, rank=1, world_size=2, batch_size=2, start_batches=start, mode=mode)
        dl = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=lambda x: x)
        it = iter(dl)
        return [[(s["key"], s["draw"]) for s in next(it)] for _ in range(n)]

    straight = batches(0, 9)
    assert batches(5, 4) == straight[5:]
    assert [batches_of_worker(5, w, 2) for w in range(2)] == [3, 2]
    assert batches_of_worker(1, 1, 2) == 0 and batches_of_worker(7, 0, 1) == 7


# -------------------------------------------------------------------------------------- latent cache


@pytest.fixture(scope="module")
def long_segment_latents(tiny_experts, tmp_path_factory):
    """A 4 s segment cached at the default 0.5 s stride: clips starting at 0, 0.5, ..., 2.0 (5 clips)."""
    from media.shards import write_shard
    from tests.train.conftest import sounding_video
    from train.cache_latents import cache_latents

    d = tmp_path_factory.mktemp("long")
    write_shard(d / "train-000000.tar", [("long0", sounding_video(11, seconds=4.0), {"label": "bounce"})])
    out = cache_latents(str(d / "*.tar"), d / "latents", *tiny_experts, height=16, width=16, noise_draws=3,
                        dtype="float32")
    from media.shards import iter_segments

    return out[0], next(iter_segments(str(d / "*.tar"))).video  # as decoded from the shard (h264), not the source


def test_cached_mean_and_std_are_the_vae_posterior(long_segment_latents, tiny_experts):
    from media.shards import group_samples, read_tar_members
    from train.data import ClipSpec, load_latent_sample, make_clip
    from train.experts import load_experts

    url, video = long_segment_latents
    (raw,) = list(group_samples(read_tar_members(url)))
    t, meta = load_latent_sample(raw)
    assert meta["starts"] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert t["video_mean"].shape == (5, 14, 4, 8, 8) and t["audio_mean"].shape == (5, 8, 50, 16)
    assert t["image_latents"].shape == (5, 3, 4, 8, 8) and t["image_embeds"].shape[:2] == (5, 1)
    _, _, frozen = load_experts(*tiny_experts)
    spec = ClipSpec(height=16, width=16)
    for i in (0, 3):
        clip = make_clip(video, spec, meta["starts"][i])
        with torch.no_grad():
            dv = frozen.video_vae.encode(clip["video"]).latent_dist
            da = frozen.audio_vae.encode(clip["mel"][None]).latent_dist
        sv, sa = frozen.video_vae.config.scaling_factor, frozen.audio_vae.config.scaling_factor
        torch.testing.assert_close(t["video_mean"][i], dv.mean * sv, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(t["video_std"][i], dv.std * sv, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(t["audio_mean"][i], da.mean[0] * sa, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(t["audio_std"][i], da.std[0] * sa, atol=1e-5, rtol=1e-4)
    # different clips of the segment differ; the noise-augmentation draws differ from each other
    assert (t["video_mean"][0] - t["video_mean"][3]).abs().max() > 1e-3
    assert (t["image_latents"][0, 0] - t["image_latents"][0, 1]).abs().max() > 1e-4


def test_epochs_draw_new_clips_and_latents_from_one_cached_segment(long_segment_latents):
    from train.data import LatentClips

    url, _ = long_segment_latents
    it = iter(LatentClips(url, shuffle=0, seed=0))
    items = [next(it) for _ in range(8)]  # one segment: one item per epoch
    assert len({it["clip_index"] for it in items}) >= 3
    a, b = items[0], items[1]
    assert (a["video_latents"] - b["video_latents"]).abs().max() > 1e-3
    assert (a["audio_latents"] - b["audio_latents"]).abs().max() > 1e-3
    # same clip in two epochs: a different posterior sample around the same mean
    same = [(x, y) for i, x in enumerate(items) for y in items[i + 1 :] if x["clip_index"] == y["clip_index"]]
    if same:
        x, y = same[0]
        assert not torch.equal(x["video_latents"], y["video_latents"])
    # the same seed gives the same draws (restartable)
    again = next(iter(LatentClips(url, shuffle=0, seed=0)))
    assert torch.equal(again["video_latents"], a["video_latents"]) and again["clip_index"] == a["clip_index"]


def test_too_few_samples_for_the_readers_is_a_one_line_error(tmp_path):
    from media.stream import too_few_samples

    urls = key_shards(tmp_path, [2, 1])
    assert too_few_samples(urls, 1, 3, "exact") is None and too_few_samples(urls, 2, 1, "exact") is None
    assert "3 samples for 2 process(es) x 2 DataLoader worker(s)" in too_few_samples(urls, 2, 2, "exact")
    assert too_few_samples(urls, 2, 2) is None  # auto: fewer shards than readers is the resampled mode


def test_cache_latents_cli_errors(tmp_path, capsys):
    from train.cache_latents import cli

    args = ["--out", str(tmp_path / "lat"), "--video-model", "v", "--audio-model", "a"]
    assert cli(["--shards", str(tmp_path / "none-*.tar"), *args]) == 2
    assert capsys.readouterr().err.strip() == f"error: no shards match '{tmp_path / 'none-*.tar'}'"
    key_shards(tmp_path, [1])
    assert cli(["--shards", str(tmp_path / "*.tar"), "--stride", "0", *args]) == 2
    assert capsys.readouterr().err.strip() == "error: --stride must be > 0 and --noise-draws >= 1"
    assert not (tmp_path / "lat").exists()


def test_cache_latents_takes_a_config_file_and_overrides(tmp_path, capsys):
    """The shared config mechanism: --config file, key=value overrides (checked by type and name), --help-config."""
    from train.cache_latents import cli

    key_shards(tmp_path, [1])
    (tmp_path / "cache.yaml").write_text(f"shards: '{tmp_path / '*.tar'}'\nout: {tmp_path / 'lat'}\nvideo_model: v\naudio_model: a\n")
    assert cli(["--config", str(tmp_path / "cache.yaml"), "stride=0"]) == 2  # the override reaches the check
    assert capsys.readouterr().err.strip() == "error: --stride must be > 0 and --noise-draws >= 1"
    assert cli(["--config", str(tmp_path / "cache.yaml"), "strde=1"]) == 2
    assert "did you mean 'stride'" in capsys.readouterr().err
    assert cli(["--config", str(tmp_path / "cache.yaml"), "noise_draws=many"]) == 2
    assert "noise_draws" in capsys.readouterr().err
    assert cli(["--shards", str(tmp_path / "*.tar"), "--out", str(tmp_path / "lat")]) == 2
    assert capsys.readouterr().err.strip() == "error: --video-model is required"
    with pytest.raises(SystemExit) as e:
        cli(["--help-config"])
    assert e.value.code == 0 and "noise_draws" in capsys.readouterr().out
