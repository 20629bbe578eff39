"""Review a curation run's kept segments in the browser: accept or reject each one, class by class.

    python -m pipelines.review --out out/ --reviewer alice [--classes avsync15] [--port 8765]

Open the printed address (http://127.0.0.1:PORT/). Each segment plays with sound; keys: a accept, r reject,
u undo, j/k or arrows move, n next undecided, space play/pause, ]/[ next/previous class. Decisions are saved
at once to OUT/review.parquet (segment_id, decision, reviewer, time), survive a restart, and several
reviewers can work on one run at the same time (give each a disjoint --classes and its own --port).
Ctrl-C (SIGINT) or SIGTERM stops the server, also when it was started in the background by a script (where
the shell starts it with SIGINT ignored).
"""

from __future__ import annotations

import argparse
import signal
import sys

from common.cli import add_config_arguments, run_main, settings_help, setup_logging
from common.config import load


def _stop_on_signals() -> None:
    """SIGINT and SIGTERM end serve_forever as KeyboardInterrupt. A shell without job control starts a
    background command with SIGINT ignored, and Python keeps it ignored: without this, `kill -INT` would not
    stop a server started by a script."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.review", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="folder of a finished `python -m pipelines.curate` run (segments.parquet, shards/)")
    p.add_argument("--reviewer", help="your name; stored with every decision (required)")
    p.add_argument("--classes", help="review only these classes: avsync15 / vggss (shipped lists), a file with one "
                   "class per line, or a,b,c (default: every class of the run)")
    p.add_argument("--port", type=int, help="port to listen on (default 8765; 0 = any free port)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1: the page has no authentication)")
    add_config_arguments(p, example="thumbnails=5")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from curate.review.server import ReviewConfig, make_server

    if args.help_config:
        print(settings_help(ReviewConfig))
        return 0
    def body() -> int:
        cfg = load(ReviewConfig, args.config, args.overrides, explicit={
            "out": args.out, "reviewer": args.reviewer, "classes": args.classes, "port": args.port, "host": args.host})
        server = make_server(cfg)
        setup_logging()
        app = server.app
        host, port = server.server_address[:2]
        print(f"reviewing {len(app.segments)} segments of {len(app.classes)} classes in {app.out} as {app.reviewer}")
        if app.missing_classes:
            print(f"warning: no kept segments of {len(app.missing_classes)} listed classes: {', '.join(app.missing_classes)}")
        _stop_on_signals()
        print(f"open http://{host}:{port}/   (Ctrl-C stops; decisions are saved in {app.store.path})", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        print(f"decisions saved in {app.store.path}")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
