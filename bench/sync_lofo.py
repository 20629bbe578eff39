"""Leave-one-family-out table of the sync classifier: train without a look family, test on it.

    python bench/sync_lofo.py --out out/sync_lofo --minutes 7 --videos 16 [--families motion,camera] [--init-from CKPT] [key=value ...]

For each held-out family F (default: the six look families): train the `small` preset on its mix
without F (the first generator "flash" stays in every run) for `--minutes` of training time
(`families=[...] max_minutes=...`, plus any key=value settings given), then evaluate on `--videos` held-out synthetic videos (seeds >= 1e9) of
*every* family, both protocols. Writes `lofo.json` and `lofo.md` (rows: held-out family; columns:
test family; the held-out cell is the one that counts) into --out; prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sync_classifier.config import small
from sync_classifier.data import EVAL_SEED_BASE
from sync_classifier.evaluate import evaluate_model, synthetic_videos
from sync_classifier.families import ALL_FAMILIES, FAMILIES
from sync_classifier.model import SyncClassifier
from sync_classifier.train import main as train_main


def table(results: dict, families: list[str], protocol: str) -> str:
    head = "| held out \\ tested on | " + " | ".join(families) + " |"
    lines = [head, "|" + "---|" * (len(families) + 1)]
    for held, row in results.items():
        cells = []
        for f in families:
            r = row["eval"][f][protocol]
            cell = f"{100 * r['acc_a2v']:.0f} / {100 * r['acc_v2a']:.0f}"
            cells.append(f"**{cell}**" if f == held else cell)
        lines.append(f"| {held} ({row['steps']} steps) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/sync_lofo", help="folder for the runs and the table")
    p.add_argument("--minutes", type=float, default=7.0, help="training time per held-out family")
    p.add_argument("--videos", type=int, default=16, help="held-out test videos per family")
    p.add_argument("--families", default=",".join(FAMILIES), help="families to hold out in turn (comma-separated)")
    p.add_argument("--real-media", default="", help="real media folder for training and test videos")
    p.add_argument("--init-from", default="", help="checkpoint every run starts from (e.g. a flash-only warm start, as the shipped recipe)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra training settings")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held_out = [f for f in args.families.split(",") if f]
    res_file = out / "lofo.json"
    results = json.loads(res_file.read_text()) if res_file.exists() else {}
    for held in held_out:
        if held in results:
            continue
        others = [f for f in small().families if f != held]  # the preset's mix (flash included) minus F
        run = out / held
        t0 = time.time()
        extra = [f"real_media={args.real_media}"] if args.real_media else []
        init = ["--init-from", args.init_from] if args.init_from else []  # options before the key=value positionals
        rc = train_main(["--preset", "small", "--out", str(run), "--no-progress", *init, f"families=[{', '.join(others)}]",
                         f"max_minutes={args.minutes}", *extra, *args.overrides])
        if rc != 0:
            return rc
        model = SyncClassifier.from_pretrained(run)
        steps = torch.load(run / "train_state.pt", weights_only=False)["step"]
        ev = {}
        for fam in ALL_FAMILIES:
            vids = synthetic_videos(args.videos, model.spec, seed=EVAL_SEED_BASE + 50_000, family=fam, real_media=args.real_media)
            ev[fam] = evaluate_model(model, vids)
        results[held] = {"steps": steps, "train_families": others, "minutes": args.minutes, "wall_s": round(time.time() - t0),
                         "init_from": args.init_from or None,
                         "eval": ev}
        res_file.write_text(json.dumps(results, indent=2) + "\n")
        print(f"held out {held}: {steps} steps; on {held}: asva a2v {100 * ev[held]['asva']['acc_a2v']:.0f} % "
              f"v2a {100 * ev[held]['asva']['acc_v2a']:.0f} %", flush=True)
    md = []
    for proto in ("asva", "all"):
        md.append(f"protocol {proto} (a2v / v2a %, chance {100 * next(iter(results.values()))['eval'][FAMILIES[0]][proto]['chance']:.1f} %)\n")
        md.append(table(results, list(ALL_FAMILIES), proto) + "\n")
    (out / "lofo.md").write_text("\n".join(md))
    print("\n".join(md))
    print(f"saved {res_file} and {out / 'lofo.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
