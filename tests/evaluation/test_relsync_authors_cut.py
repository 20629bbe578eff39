"""RelSync with the authors' released sync classifier layout: the evaluation cuts both clips from the files
(the generated mp4, the reference segment's mp4 in its shard) as their RelSync / AlignSync evaluation does."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines.evaluate import main
from tests.evaluation.eval_helpers import TINY
from tests.sync_classifier.test_asva import _random_state, _write_modules, their_shapes


@pytest.fixture(scope="module")
def authors_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("asva_eval") / "modules"
    state = _random_state(their_shapes(a=(8, 8, 16, 16), v=(8, 8, 16, 16), dim=16), torch.Generator().manual_seed(5))
    for part in state.values():
        for k in part:
            if k.endswith("running_var"):
                part[k] = part[k].abs() + 1.0
    _write_modules(root, state, "safetensors")
    return root


def test_relsync_under_the_authors_cut(eval_data, authors_ckpt, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    import sync_classifier.asva_preprocess as ap

    opened = []
    real_init = ap.AsvaReader.__init__

    def spy(self, path):
        opened.append(path)
        real_init(self, path)

    monkeypatch.setattr(ap.AsvaReader, "__init__", spy)
    rc = main(["--generated", str(eval_data / "gen"), "--reference", str(eval_data / "test-*.tar"), "--metrics", "relsync",
               "--out", str(tmp_path), "--no-progress", "--allow-random-weights", f"sync_checkpoint={authors_ckpt}"] + TINY)
    assert rc == 0
    # both sides were cut from their files: generated paths, and reference mp4s from the shards (file objects)
    assert any(isinstance(p, str) and p.endswith(".mp4") for p in opened)
    assert any(hasattr(p, "read") for p in opened)
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "per_sample.parquet").to_pylist()}
    assert rows["seg2_s0"]["relsync"] == pytest.approx(0.5, abs=0.05)  # a copy of its reference clip
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["metrics"]["relsync"]["n_generated"] >= 3
    assert m["variants"]["relsync"]["preprocess"] == "asva"
