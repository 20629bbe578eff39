"""Leave-one-family-out table of the sync classifier: train without a look family, test on it.

    python bench/sync_lofo.py --out out/sync_lofo --videos 16 --held-out-videos 32 [--jobs 2]
        [--families motion,camera] [--steps 900] [--real-media DIR] [--init-from CKPT] [key=value ...]

For each held-out family F (default: the six look families): train the `small` preset on its mix without
F (the first generator "flash" stays in every run) for `--steps` steps (default: the preset's; `--minutes`
caps the training time instead), plus any key=value settings given; then evaluate on held-out synthetic
videos (seeds >= 1e9, never drawn in training) of *every* family, both protocols: `--held-out-videos` of F
(the cell that counts), `--videos` of each other family. `--jobs N` trains N held-out families at once, each
in its own process with one torch thread (use one job per free core). Each family's result, with the
settings it was trained with, is written to `<out>/<F>/lofo_row.json` as soon as it is done; a rerun skips
finished families and resumes a family's interrupted training (`--resume`) to the budget, with the run's saved
settings (to train a finished family further, delete its lofo_row.json and give a larger `--steps`). The
table of every finished family goes to `<out>/lofo.json` and `<out>/lofo.md` (rows: held-out family;
columns: test family; the held-out cell in bold) and is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from sync_classifier.config import small
from sync_classifier.data import EVAL_SEED_BASE
from sync_classifier.evaluate import evaluate_model, synthetic_videos
from sync_classifier.families import ALL_FAMILIES, FAMILIES
from sync_classifier.model import SyncClassifier
from train.sync_classifier import main as train_main

ROW = "lofo_row.json"


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


def run_family(held: str, args, out: Path) -> dict:
    """Train without `held`, evaluate on every family; the row of the table."""
    others = [f for f in small().families if f != held]  # the preset's mix (flash included) minus F
    run = out / held
    t0 = time.time()
    extra = [f"real_media={args.real_media}"] if args.real_media else []
    budget = [f"max_minutes={args.minutes}"] + ([f"steps={args.steps}"] if args.steps else [])
    init = ["--init-from", args.init_from] if args.init_from else []  # options before the key=value positionals
    if (run / "train_state.json").is_file():  # an earlier, interrupted run of this bench: continue it to the budget
        if args.overrides or args.init_from:
            print(f"held out {held}: resuming {run} with its saved settings; --init-from and key=value settings "
                  "of this call are not applied", flush=True)
        rc = train_main(["--resume", str(run), "--no-progress", *budget])
    else:
        rc = train_main(["--preset", "small", "--out", str(run), "--no-progress", *init, f"families=[{', '.join(others)}]",
                         *budget, *extra, *args.overrides])
    if rc != 0:
        raise SystemExit(rc)
    model = SyncClassifier.from_pretrained(run)
    state = json.loads((run / "train_state.json").read_text())
    steps, saved = state["step"], state["config"]
    ev = {}
    for fam in ALL_FAMILIES:
        n = args.held_out_videos if fam == held else args.videos
        vids = synthetic_videos(n, model.spec, seed=EVAL_SEED_BASE + 50_000, family=fam, real_media=args.real_media)
        ev[fam] = evaluate_model(model, vids)
        ev[fam]["videos"] = n
    row = {"steps": steps, "train_families": others, "minutes": args.minutes, "wall_s": round(time.time() - t0),
           "init_from": args.init_from or None, "overrides": list(args.overrides), "eval": ev,
           "settings": {k: saved[k] for k in ("num_offsets", "batch_size", "lr", "lr_schedule", "real_media")}
           | {f"model.{k}": saved["model"][k] for k in ("video_input", "temporal_pool", "head_fusion", "video_cells")
              if k in saved["model"]}}
    (run / ROW).write_text(json.dumps(row, indent=2) + "\n")
    print(f"held out {held}: {steps} steps; on {held} ({ev[held]['videos']} videos): asva a2v {100 * ev[held]['asva']['acc_a2v']:.0f} % "
          f"v2a {100 * ev[held]['asva']['acc_v2a']:.0f} %", flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/sync_lofo", help="folder for the runs and the table")
    p.add_argument("--steps", type=int, default=0, help="training steps per held-out family (0: the preset's)")
    p.add_argument("--minutes", type=float, default=0.0, help="cap on the training time per held-out family (0: none)")
    p.add_argument("--videos", type=int, default=16, help="held-out test videos per trained family")
    p.add_argument("--held-out-videos", type=int, default=0, help="test videos of the held-out family (0: --videos)")
    p.add_argument("--families", default=",".join(FAMILIES), help="families to hold out in turn (comma-separated)")
    p.add_argument("--jobs", type=int, default=1, help="held-out families trained at once (one process each)")
    p.add_argument("--real-media", default="", help="real media folder for training and test videos")
    p.add_argument("--init-from", default="", help="checkpoint every run starts from (e.g. a warm start)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra training settings")
    args = p.parse_args(argv)
    args.held_out_videos = args.held_out_videos or args.videos
    unknown = [f for f in args.families.split(",") if f and f not in FAMILIES]
    if unknown or args.jobs < 1:
        p.error(f"unknown families {unknown} (choose from {', '.join(FAMILIES)})" if unknown else "--jobs must be >= 1")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [f for f in args.families.split(",") if f and not (out / f / ROW).exists()]
    if args.jobs == 1:
        for held in todo:
            run_family(held, args, out)
    else:  # one child process per held-out family, at most --jobs at a time
        base = list(argv if argv is not None else sys.argv[1:])
        procs: list[subprocess.Popen] = []
        for held in todo:
            while sum(q.poll() is None for q in procs) >= args.jobs:
                time.sleep(1.0)
            procs.append(subprocess.Popen([sys.executable, __file__, *_child_args(base, held)]))
        failed = [q.args for q in procs if q.wait() != 0]
        if failed:
            print(f"error: {len(failed)} held-out runs failed", file=sys.stderr)
            return 1
    results = {f: json.loads((out / f / ROW).read_text()) for f in FAMILIES if (out / f / ROW).exists()}
    if not results:
        print("error: no finished held-out family", file=sys.stderr)
        return 1
    (out / "lofo.json").write_text(json.dumps(results, indent=2) + "\n")
    md = []
    first = next(iter(results.values()))["eval"][FAMILIES[0]]
    for proto in ("asva", "all"):
        md.append(f"protocol {proto} (a2v / v2a %, chance {100 * first[proto]['chance']:.1f} %)\n")
        md.append(table(results, list(ALL_FAMILIES), proto) + "\n")
    (out / "lofo.md").write_text("\n".join(md))
    print("\n".join(md))
    print(f"saved {out / 'lofo.json'} and {out / 'lofo.md'}")
    return 0


def _child_args(argv: list[str], held: str) -> list[str]:
    """This run's arguments with --families set to `held` and --jobs to 1."""
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--families", "--jobs"):
            skip = True
            continue
        if a.startswith(("--families=", "--jobs=")):
            continue
        args.append(a)
    # options go before the key=value positionals
    return ["--families", held, "--jobs", "1", *args]


if __name__ == "__main__":
    sys.exit(main())
