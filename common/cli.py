"""Command-line conventions shared by every entry point.

User mistakes (a bad flag value, a missing file, a pattern matching nothing, an unknown setting) end the
command with one line, `error: ...`, and exit code 2, before any model is built or any output written;
`run_main` does that for an entry point's `main`. Log lines go through tqdm so they never glue onto a
progress bar, and every entry point can add the shared `--config` / `key=value` arguments.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Iterable

from common.config import ConfigError, describe


class UsageError(Exception):
    """A mistake in how a command was called (exit code 2, one line)."""


USER_ERRORS = (UsageError, ConfigError)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_main(fn: Callable[[], int | None]) -> int:
    """Call an entry point's body; user errors become `error: ...` + exit code 2."""
    try:
        rc = fn()
    except USER_ERRORS as e:
        return fail(str(e))
    return 0 if rc is None else int(rc)


def expand_braces(pattern: str) -> list[str]:
    """`a-{000..002}.tar` / `{a,b}` expansion as webdataset understands it."""
    try:
        from braceexpand import braceexpand
    except ImportError:  # webdataset depends on braceexpand; keep a plain fallback anyway
        return [pattern]
    return list(braceexpand(pattern))


def resolve_files(patterns: str | Iterable[str], what: str = "shards") -> list[str]:
    """Every existing file matched by glob / brace patterns (several may be given, separated by spaces in one
    string or as a list), sorted and de-duplicated; UsageError naming the pattern(s) when nothing matches."""
    if isinstance(patterns, str):
        patterns = patterns.split()
    patterns = [p for p in patterns if p]
    if not patterns:
        raise UsageError(f"no {what} given")
    found: list[str] = []
    for pat in patterns:
        for p in expand_braces(pat):
            matches = sorted(glob.glob(p)) if glob.has_magic(p) else ([p] if Path(p).exists() else [])
            found.extend(m for m in matches if Path(m).is_file())
    found = sorted(dict.fromkeys(found))
    if not found:
        shown = " ".join(repr(p) for p in patterns)
        raise UsageError(f"no {what} match {shown}")
    return found


def existing_file(path: str | None, what: str) -> Path:
    if not path:
        raise UsageError(f"{what} is required")
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what} {str(path)!r} does not exist")
    if not p.is_file():
        raise UsageError(f"{what} {str(path)!r} is not a file")
    return p


def existing_path(path: str | None, what: str) -> Path:
    if not path:
        raise UsageError(f"{what} is required")
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what} {str(path)!r} does not exist")
    return p


def output_dir(path: str | Path, what: str = "--out") -> Path:
    """A folder that can be written: created if missing; UsageError if the path is a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a file, not a folder")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{what} {str(path)!r}: {str(parent)!r} is a file, not a folder")
            break
    return p


def output_file(path: str | Path, what: str = "--out") -> Path:
    """A file to write: its folder is created; UsageError if the path is a folder or its parent a file."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a folder, not a file")
    output_dir(p.parent, what=f"folder of {what}")
    return p


def add_config_arguments(parser: argparse.ArgumentParser, example: str = "key=value") -> None:
    """`--config FILE` and positional `key=value` overrides, the same on every entry point."""
    parser.add_argument("--config", metavar="FILE", help="YAML/JSON file of settings (flags and key=value overrides win)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"override any setting with a dotted key, e.g. {example} (see --help-config)")
    parser.add_argument("--help-config", action="store_true", help="list every setting with its type, default and meaning, then exit")


def settings_help(cls) -> str:
    """Every setting of a config dataclass, one line each, for `--help-config`."""
    rows = describe(cls)
    width = max(len(k) for k, *_ in rows)
    lines = []
    for key, tp, default, doc in rows:
        lines.append(f"  {key:<{width}}  {tp} = {default!r}" + (f"\n  {'':<{width}}    {doc}" if doc else ""))
    return "\n".join(lines)


class TqdmLoggingHandler(logging.Handler):
    """Writes log records with `tqdm.write`, so a line never lands on the same line as a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> None:
    """One handler on the root logger that cooperates with progress bars; quiet third-party chatter."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, TqdmLoggingHandler):
            root.removeHandler(h)
    h = TqdmLoggingHandler()
    h.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(h)
    root.setLevel(level)
    for noisy in ("urllib3", "huggingface_hub", "filelock", "matplotlib", "PIL", "numba", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")  # read when diffusers is imported
    if "diffusers" in sys.modules:  # importing it only to quiet it would cost seconds on every entry point
        quiet_diffusers()


def quiet_diffusers() -> None:
    """No per-call inner progress bars ("100%|...| 25/25") and no info lines from diffusers; entry points that
    use diffusers call this after importing it."""
    from diffusers.utils import logging as dlog

    dlog.disable_progress_bar()
    dlog.set_verbosity_error()


__all__ = ["UsageError", "USER_ERRORS", "fail", "run_main", "resolve_files", "expand_braces", "existing_file",
           "existing_path", "output_dir", "output_file", "add_config_arguments", "settings_help", "setup_logging", "quiet_diffusers"]
