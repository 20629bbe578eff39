"""The shipped `small` checkpoint still scores what its README reports (marker `slow`: `python -m pytest -m slow`).

`sync_classifier/checkpoints/small/eval.json` is the output of the evaluation command its README gives (held-out
synthetic videos of every look family, seeds from 1e9, both protocols). This re-runs that command and asserts
every per-family accuracy within 6 points (CPU differences can flip a prediction near a tie; 16 videos per
family make one flip 6.25 points) and that every held-out look family is above its chance level."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync_classifier.evaluate import main as evaluate_main

pytestmark = pytest.mark.slow

CKPT = Path(__file__).resolve().parents[2] / "sync_classifier" / "checkpoints" / "small"


def test_shipped_checkpoint_reproduces_its_reported_accuracy(tmp_path):
    recorded = json.loads((CKPT / "eval.json").read_text())
    out = tmp_path / "eval.json"
    args = list(recorded["command"][1:]) if recorded["command"][0] == "python" else list(recorded["command"])
    args = [a for a in args if a not in ("-m", "sync_classifier.evaluate")]
    i = args.index("--json")
    args[i + 1] = str(out)
    args[args.index("--checkpoint") + 1] = str(CKPT)  # the recorded path is relative to the repository root
    assert evaluate_main(args) == 0
    got = json.loads(out.read_text())
    assert got["families"].keys() == recorded["families"].keys()
    for fam, rec in recorded["families"].items():
        for proto in ("asva", "all"):
            for key in ("acc_a2v", "acc_v2a"):
                assert got["families"][fam][proto][key] == pytest.approx(rec[proto][key], abs=0.06), (fam, proto, key)
            assert got["families"][fam][proto]["acc_a2v"] > got["families"][fam][proto]["chance"], (fam, proto)
