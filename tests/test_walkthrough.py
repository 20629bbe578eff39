"""The README's "From raw videos to metrics" walkthrough, run exactly as written, end to end.

The fenced block after `<!-- walkthrough -->` in README.md is run as one bash script (`set -euo pipefail`) in a
temporary folder that holds a link to the repository's `sample/` (its commands read `sample/...` and write
`out/walk/...`, relative to the repository root where a user runs them). Nothing in the commands is
substituted: `python` is this interpreter and the repository is on PYTHONPATH. The block is already at tiny size
(a few synthetic videos, the tiny sync classifier and JointDiT, a few steps), about a minute on 2 CPU cores.
The test then checks what each link of the chain left behind, so a step that silently produced nothing fails.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def walkthrough_script(readme: Path = REPO / "README.md") -> str:
    """The bash block that follows the `<!-- walkthrough -->` marker (other marker comments may sit between)."""
    text = readme.read_text()
    m = re.search(r"<!-- walkthrough -->\s*\n(?:<!--[^\n]*-->\s*\n)*```bash\n(.*?)\n```", text, re.S)
    assert m, "README.md has no ```bash block after a <!-- walkthrough --> marker"
    return m.group(1)


def test_walkthrough_block_is_the_whole_chain():
    script = walkthrough_script()
    order = ["sample/make_sample.py", "pipelines.curate", "sync_classifier.train", "train.jointdit",
             "pipelines.conditions", "train.sample_jointdit", "pipelines.evaluate"]
    at = [script.find(x) for x in order]
    assert all(i >= 0 for i in at), dict(zip(order, at))
    assert at == sorted(at), "the walkthrough's steps are out of order"
    assert "/work" not in script and "../" not in script


def test_readme_walkthrough_runs_end_to_end(tmp_path):
    script = walkthrough_script()
    (tmp_path / "sample").symlink_to(REPO / "sample", target_is_directory=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-6000:])

    walk = tmp_path / "out" / "walk"
    # 1. curation: both splits written, every shard sample has its mp4 / flac / json
    shards = {p.name.split("-")[0]: p for p in (walk / "curated" / "shards").glob("*.tar")}
    assert set(shards) == {"train", "test"}, sorted(shards)
    for shard in shards.values():
        with tarfile.open(shard) as tar:
            names = tar.getnames()
        keys = {n.rsplit(".", 1)[0] for n in names}
        assert keys and all(f"{k}.{ext}" in names for k in keys for ext in ("mp4", "flac", "json"))
    # 2. the sync classifier trained on the shards for the steps asked
    sync = walk / "sync"
    assert (sync / "model.safetensors").is_file() and (sync / "config.json").is_file()
    log = [json.loads(line) for line in (sync / "log.jsonl").read_text().splitlines() if line.strip()]
    assert max(r["step"] for r in log) == 4 and all(math.isfinite(r["loss"]) for r in log)
    # 3. JointDiT's checkpoint, flagged as random-init experts
    state = json.loads((walk / "jointdit" / "checkpoint-000002" / "state.json").read_text())
    assert state["step"] == 2 and state["random_weights"] is True
    # 4. one sample per condition, each with a sidecar naming its reference segment
    conds = sorted((walk / "cond").glob("*.json"))
    gens = sorted((walk / "gen").glob("*.mp4"))
    assert conds and len(gens) == len(conds)
    for g in gens:
        side = json.loads(g.with_suffix(".json").read_text())
        assert side["reference"] and side["random_weights"] is True
    # 5. the metrics, paired with the test shards; RelSync used the classifier of step 2 and is flagged
    metrics = json.loads((walk / "eval" / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"av_align", "motion", "relsync"}
    for name, m in metrics["metrics"].items():
        assert m["n_generated"] == len(gens) and math.isfinite(m["value"]), (name, m)
    assert metrics["counts"]["paired"] == len(gens)
    assert 0.0 < metrics["metrics"]["relsync"]["value"] < 1.0
    assert metrics["metrics"]["relsync"]["random_weights"] is True
    assert Path(metrics["models"]["sync_classifier"]["weights"]).name == "sync"
    assert metrics["generator_random_weights"] is True
    assert (walk / "eval" / "per_sample.parquet").is_file() and (walk / "eval" / "report.html").is_file()
