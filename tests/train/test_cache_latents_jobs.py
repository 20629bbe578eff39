"""`train.cache_latents` as several jobs over one --out: outputs named after the input shards, each job its
share, completion markers, and a stopped job resumed by running it again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train.cache_latents as cl
from media.shards import group_samples, read_tar_members, write_shard
from tests.train.conftest import sounding_video

ROOT = Path(__file__).resolve().parents[2]
KW = dict(height=16, width=16, noise_draws=2, dtype="float32", stride=1.0)


@pytest.fixture(scope="module")
def three_shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    for i, name in enumerate(["a-000003", "a-000001", "b-000000"]):  # names not in position order
        write_shard(d / f"{name}.tar", [(f"c{i}", sounding_video(i, seconds=2.0, size=32), {"label": "bounce"})])
    return d


def tensors(path):
    from train.data import load_latent_sample

    (raw,) = list(group_samples(read_tar_members(path)))
    return load_latent_sample(raw)


def test_two_jobs_write_the_union_of_one_job(three_shards, tiny_experts, tmp_path):
    pattern = str(three_shards / "*.tar")
    one = cl.cache_latents(pattern, tmp_path / "one", *tiny_experts, **KW)
    j0 = cl.cache_latents(pattern, tmp_path / "two", *tiny_experts, **KW, job_index=0, num_jobs=2)
    j1 = cl.cache_latents(pattern, tmp_path / "two", *tiny_experts, **KW, job_index=1, num_jobs=2)
    names = ["a-000001.tar", "a-000003.tar", "b-000000.tar"]
    assert sorted(Path(p).name for p in one) == names
    assert sorted(Path(p).name for p in j0 + j1) == names and not set(j0) & set(j1)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(names + [n + ".done.json" for n in names])
    for n in names:  # the same latents whichever job wrote them (noise seeded by the shard's name)
        (a, ma), (b, mb) = tensors(tmp_path / "one" / n), tensors(tmp_path / "two" / n)
        assert ma["source"] == mb["source"] and ma["source"].endswith(n)
        for k in a:
            torch.testing.assert_close(a[k], b[k])
        marker = json.loads((tmp_path / "two" / (n + ".done.json")).read_text())
        assert marker["segments"] == 1 and marker["settings"]["noise_draws"] == 2


def test_a_stopped_job_resumes(three_shards, tiny_experts, tmp_path, monkeypatch):
    pattern, out = str(three_shards / "*.tar"), tmp_path / "lat"
    real, calls = cl.encode_segment, []

    def dies_on_second_shard(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("job killed")
        return real(*a, **k)

    monkeypatch.setattr(cl, "encode_segment", dies_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        cl.cache_latents(pattern, out, *tiny_experts, **KW)
    assert sorted(p.name for p in out.iterdir()) == ["a-000001.tar", "a-000001.tar.done.json"]
    first = (out / "a-000001.tar").stat().st_mtime_ns
    (out / "a-000003.tar").write_bytes(b"half a tar")  # a shard without marker (stopped before the marker)
    (out / ".b-000000.tar.tmp99999").write_bytes(b"partial")  # a temporary file left by a killed writer
    calls.clear()
    monkeypatch.setattr(cl, "encode_segment", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    done = cl.cache_latents(pattern, out, *tiny_experts, **KW)
    assert len(calls) == 2 and len(done) == 3  # only the two unfinished shards were encoded again
    assert (out / "a-000001.tar").stat().st_mtime_ns == first
    assert tensors(out / "a-000003.tar")[0]["video_mean"].shape[0] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        n + s for n in ["a-000001.tar", "a-000003.tar", "b-000000.tar"] for s in ("", ".done.json"))
    calls.clear()
    assert len(cl.cache_latents(pattern, out, *tiny_experts, **KW)) == 3 and not calls  # all done: nothing to do
    with pytest.raises(ValueError, match="other settings .*noise_draws=2.*noise_draws=3"):
        cl.cache_latents(pattern, out, *tiny_experts, **{**KW, "noise_draws": 3})


def test_jobs_share_names_and_cli_errors(tmp_path, capsys, monkeypatch):
    assert cl.jobs_share(list("abcde"), 1, 2) == [1, 3] and cl.jobs_share(list("ab"), 2, 3) == []
    assert cl.output_names(["/x/train-000001.tar", "/y/train-000002.tar"]) == ["train-000001.tar", "train-000002.tar"]
    with pytest.raises(ValueError, match="same file name 'train-000001.tar'"):
        cl.output_names(["/x/train-000001.tar", "/y/train-000001.tar"])
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert cl.job_of_env() == (3, 4)
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "s.tar").write_bytes(b"")
    args = ["--out", str(tmp_path / "lat"), "--video-model", "v", "--audio-model", "a"]
    assert cl.cli(["--shards", str(tmp_path / "x" / "s.tar"), "--job-index", "2", "--num-jobs", "2", *args]) == 2
    assert capsys.readouterr().err.strip() == "error: --job-index 2 out of range for --num-jobs 2"
    assert cl.cli(["--shards", f"{tmp_path / 'x' / 's.tar'} {tmp_path / 'y' / 's.tar'}", *args]) == 2
    assert "same file name 's.tar'" in capsys.readouterr().err
    assert not (tmp_path / "lat").exists()


def test_two_concurrent_cli_jobs_over_one_out(three_shards, tiny_experts, tmp_path):
    """Two processes at once, one told by flags, one by torchrun's RANK/WORLD_SIZE: together every shard, once."""
    out = tmp_path / "lat"
    base = [sys.executable, "-m", "train.cache_latents", "--shards", str(three_shards / "*.tar"), "--out", str(out),
            "--video-model", tiny_experts[0], "--audio-model", tiny_experts[1], "--height", "16", "--width", "16",
            "--noise-draws", "2", "--stride", "1.0", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen(base + ["--job-index", "0", "--num-jobs", "2"], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE),
             subprocess.Popen(base, cwd=ROOT, env={**env, "RANK": "1", "WORLD_SIZE": "2"}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    res = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in res]
    assert "(2 latent shards of this job)" in res[0][0] and "(1 latent shards of this job)" in res[1][0]
    assert "job 1 of 2" in res[1][1]
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tar") == ["a-000001.tar", "a-000003.tar", "b-000000.tar"]
    assert len(list(out.glob("*.done.json"))) == 3
