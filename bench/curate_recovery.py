"""Time to recover from a killed node, in seconds, against an uninterrupted run measured in the same process.

    python bench/curate_recovery.py [--videos 16] [--kill-after 4]

A Ray cluster of three raylets on this machine (a head without CPUs, so that all work runs on the two
worker nodes, and two worker nodes with 2 CPUs each); curation of short synthetic videos with
`pixel_diff,amplitude,psync` (the shipped demonstration checkpoint). Once `--kill-after` videos are done,
the worker node that holds the psync actor is removed without warning (its raylet and every process on it
die, as a preempted machine's do). Printed: wall time of the uninterrupted and the interrupted run, their
difference, and the recovery time: from the kill until the first video that was in flight on the dead node
is finished again (its actor restarted on the other node, its decode redone).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from curate import synthetic as syn  # noqa: E402
from curate.config import load_config  # noqa: E402
from curate.runner import run  # noqa: E402

SETTINGS = ["stages=pixel_diff,amplitude,psync", "psync.allow_demo_checkpoint=true", "psync.device=cpu",
            "balance.min_segments_per_class=0", "report=false", "runner.kind=ray", "runner.decode_cpus=0.5",
            "runner.model_batch_videos=1"]


def actor_node(cluster):
    """The worker node whose raylet is an ancestor of the model actor's process."""
    for node in cluster.list_all_nodes():
        if node.head:
            continue
        for info in node.all_processes.get("raylet", []):
            for p in psutil.Process(info.process.pid).children(recursive=True):
                try:
                    if "StageActor" in " ".join(p.cmdline()):
                        return node
                except psutil.Error:
                    pass
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--kill-after", type=int, default=4, help="videos finished before the node is killed")
    args = ap.parse_args(argv)
    import ray
    from ray.cluster_utils import Cluster

    tmp = Path(tempfile.mkdtemp(prefix="bench_recovery_"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address, include_dashboard=False, logging_level=logging.ERROR)
        cluster.wait_for_nodes()
        src = tmp / "src"
        for i in range(args.videos):
            syn.write_video(src / f"class{i % 2}" / f"vid{i:03d}_000000.mp4", syn.bouncing_video(4.0, seed=i)[0])

        t0 = time.perf_counter()
        clean = run(load_config(None, SETTINGS, src=str(src), out=str(tmp / "clean")), progress=False)
        clean_s = time.perf_counter() - t0

        events: dict[str, float] = {}
        done = []

        def on_video(res: dict) -> None:
            done.append(res)
            if res["attempts"] > 1 and res["status"] == "ok" and "recovered" not in events:
                events["recovered"] = time.perf_counter()

        box: dict = {}
        cfg = load_config(None, SETTINGS, src=str(src), out=str(tmp / "killed"))
        t0 = time.perf_counter()
        th = threading.Thread(target=lambda: box.setdefault("result", run(cfg, progress=False, on_video=on_video)))
        th.start()
        while len(done) < args.kill_after and th.is_alive():
            time.sleep(0.01)
        node = actor_node(cluster)
        if node is None:
            print("error: the model actor was not found on a worker node", file=sys.stderr)
            return 1
        events["kill"] = time.perf_counter()
        cluster.remove_node(node, allow_graceful=False)
        th.join()
        killed_s = time.perf_counter() - t0
        stats = box["result"].stats
        v, f = stats["videos"], stats["faults"]
        print(f"videos {args.videos}; node holding the psync actor killed after {args.kill_after} videos")
        print(f"uninterrupted run   {clean_s:6.1f} s  (videos ok {clean.stats['videos']['ok']})")
        print(f"run with node kill  {killed_s:6.1f} s  (videos ok {v['ok']}, failed {v['failed']}; actor restarts "
              f"{f['actor_restarts']}, retries {f['retries']} {f['retry_reasons']})")
        print(f"extra wall time     {killed_s - clean_s:6.1f} s")
        if "recovered" in events:
            print(f"recovery            {events['recovered'] - events['kill']:6.1f} s  (kill -> first video that was "
                  "in flight on the dead node finished again)")
        else:
            print("recovery            -  (no video was in flight on the dead node)")
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
