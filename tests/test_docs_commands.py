"""Every command of README.md and docs/ that a user may copy runs as written, at least as far as its arguments.

Marker (docs/writing_docs.md): `<!-- runnable -->` on the line before a ```bash block. For each command in such a
block that starts this project's code (`python -m MODULE`, `python bench/X.py`, `python sample/X.py`, also behind
`VAR=value`, `accelerate launch ... -m` or `torchrun ... -m`), the entry point's `--help` must exit 0, every
`--flag` the command uses must be one the help lists, and every dotted `key=value` setting one `--help-config`
lists (curate's per-stage settings such as `pixel_diff.max`, which `--help-config` shows as one mapping, are
checked with curate's own config loader). A ```bash block needs `<!-- runnable -->` or `<!-- not runnable: why -->`. The `--help` calls run in one
Python process (runpy), so the whole check costs about one interpreter start plus the imports.
The README's `<!-- walkthrough -->` block is also run for real by tests/test_walkthrough.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"common", "curate", "sync_classifier", "train", "pipelines", "evaluation"}
SEPARATORS = {"&&", "||", ";", "|", "(", ")", "&", "do", "then", "done", "fi", "else", "{", "}"}
MARK = re.compile(r"<!--\s*(runnable|not runnable[^>]*|walkthrough)\s*-->")


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


@dataclass
class Block:
    path: Path
    line: int
    markers: list[str]
    text: str


def bash_blocks(path: Path) -> list[Block]:
    """Every ```bash / ```sh fenced block of a markdown file, with the marker comments right before it."""
    lines = path.read_text().split("\n")
    blocks, i = [], 0
    while i < len(lines):
        if re.fullmatch(r"```(bash|sh|shell)\s*", lines[i]):
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            markers, k = [], i - 1
            while k >= 0 and MARK.fullmatch(lines[k].strip()):
                markers.append(MARK.fullmatch(lines[k].strip()).group(1))
                k -= 1
            blocks.append(Block(path, i + 1, markers, "\n".join(lines[i + 1:j])))
            i = j
        i += 1
    return blocks


@dataclass
class Command:
    target: str            # "-m module" or a script path relative to the repo
    flags: set = field(default_factory=set)
    keys: set = field(default_factory=set)
    settings: list = field(default_factory=list)    # the key=value tokens as written
    where: str = ""


def _tokens(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
    lex.whitespace_split = True
    lex.commenters = "#"
    return list(lex)


def commands(block: Block) -> list[Command]:
    """The project commands of a block (continuation lines joined, comments and shell syntax stripped)."""
    text = re.sub(r"\\\n", " ", block.text)
    out = []
    for n, line in enumerate(text.split("\n")):
        toks = _tokens(line)
        segments, cur = [], []
        for t in toks:
            if t in SEPARATORS or re.fullmatch(r"[;&|()]+", t):
                segments.append(cur)
                cur = []
            else:
                cur.append(t)
        segments.append(cur)
        for seg in segments:
            cmd = _command(seg)
            if cmd:
                cmd.where = f"{block.path.relative_to(REPO)}:{block.line} `{line.strip()[:100]}`"
                out.append(cmd)
    return out


def _command(seg: list[str]) -> Command | None:
    i = 0
    while i < len(seg) and re.fullmatch(r"[A-Za-z_]\w*=.*", seg[i]):       # VAR=value prefixes
        i += 1
    if i >= len(seg):
        return None
    if seg[i] in ("accelerate", "torchrun"):                                # launchers: the module follows -m
        if "-m" not in seg[i:]:
            return None
        i = seg.index("-m", i)
        target, rest = seg[i + 1], seg[i + 2:]
        if target.split(".")[0] not in PACKAGES:
            return None
        target = f"-m {target}"
    elif seg[i] in ("python", "python3") and i + 1 < len(seg):
        if seg[i + 1] == "-m" and i + 2 < len(seg):
            if seg[i + 2].split(".")[0] not in PACKAGES:
                return None
            target, rest = f"-m {seg[i + 2]}", seg[i + 3:]
        elif re.fullmatch(r"(bench|sample)/\w+\.py", seg[i + 1]):
            target, rest = seg[i + 1], seg[i + 2:]
        else:
            return None
    else:
        return None
    cmd = Command(target)
    for t in rest:
        t = t.strip("[]")
        if t.startswith("--") and len(t) > 2:
            cmd.flags.add(t.split("=", 1)[0])
        elif re.fullmatch(r"[A-Za-z_][\w]*(\.[\w]+)*=.*", t) and not t.startswith("-"):
            cmd.keys.add(t.split("=", 1)[0])
            cmd.settings.append(t)
    return cmd


def all_blocks() -> list[Block]:
    return [b for p in doc_files() for b in bash_blocks(p)]


DRIVER = r"""
import contextlib, io, json, runpy, sys
out = {}
for target, args in json.loads(sys.argv[1]):
    buf = io.StringIO()
    code = 0
    saved = list(sys.argv), list(sys.path)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            if target.startswith("-m "):
                sys.argv = [target[3:], *args]
                runpy.run_module(target[3:], run_name="__main__", alter_sys=True)
            else:
                sys.argv = [target, *args]
                sys.path.insert(0, target.rsplit("/", 1)[0])
                runpy.run_path(target, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:
        code = f"{type(e).__name__}: {e}"
    finally:
        sys.argv, sys.path[:] = saved
    out[target + " " + " ".join(args)] = [code, buf.getvalue()]
print("\n@@JSON@@" + json.dumps(out))
"""


def run_in_one_process(calls: list[tuple[str, list[str]]]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(calls)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert "@@JSON@@" in proc.stdout, (proc.stdout[-3000:], proc.stderr[-3000:])
    return json.loads(proc.stdout.rsplit("@@JSON@@", 1)[1])


def curate_setting_problems(cmd: Command) -> list[str]:
    """The settings through curate's loader (stage settings such as `pixel_diff.max=0.12` included): unknown
    setting, stage or parameter, or a value of the wrong type."""
    from common.config import ConfigError
    from curate.config import load_config

    try:
        load_config(overrides=cmd.settings)
    except ConfigError as e:
        return [f"{cmd.where}: {e}"]
    return []


def test_every_bash_block_is_marked():
    unmarked = [f"{b.path.relative_to(REPO)}:{b.line}" for b in all_blocks() if not b.markers]
    assert not unmarked, f"```bash blocks without <!-- runnable --> or <!-- not runnable: why -->: {unmarked}"


def test_parser_reads_launchers_prefixes_flags_and_settings():
    block = Block(REPO / "README.md", 1, ["runnable"], "\n".join([
        "OMP_NUM_THREADS=1 python -m train.jointdit --shards 'a/*.tar' --preset tiny \\",
        "    --steps 2 lr=1e-4   # comment --not-a-flag",
        "accelerate launch --num_processes 8 -m sync_classifier.train --preset paper batch_size=4",
        "for c in x/*.json; do python -m train.sample_jointdit --condition \"$c\" --out y.mp4; done",
        "pip install -e '.[imagebind]' && python bench/sync_lofo.py --jobs 2 [--steps 3]",
        "python -m pytest -q",
    ]))
    got = [(c.target, sorted(c.flags), sorted(c.keys)) for c in commands(block)]
    assert got == [
        ("-m train.jointdit", ["--preset", "--shards", "--steps"], ["lr"]),
        ("-m sync_classifier.train", ["--preset"], ["batch_size"]),
        ("-m train.sample_jointdit", ["--condition", "--out"], []),
        ("bench/sync_lofo.py", ["--jobs", "--steps"], []),
    ]


def test_documented_commands_parse():
    cmds = [c for b in all_blocks() if "runnable" in b.markers or "walkthrough" in b.markers for c in commands(b)]
    assert len(cmds) >= 40, len(cmds)        # the docs hold dozens; far fewer means the parser lost them
    targets = sorted({c.target for c in cmds})
    calls = [(t, ["--help"]) for t in targets] + [(t, ["--help-config"]) for t in targets if t.startswith("-m ")]
    res = run_in_one_process(calls)
    problems = []
    for t in targets:
        code, text = res[f"{t} --help"]
        if code != 0:
            problems.append(f"{t} --help exited {code}: {text[-500:]}")
            continue
        used = [c for c in cmds if c.target == t]
        for c in used:
            for f in sorted(c.flags):
                if f not in ("--help", "--help-config") and not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text):
                    problems.append(f"{c.where}: {t} has no option {f}")
        keys = {k for c in used for k in c.keys}
        if keys and t.startswith("-m "):
            code, listing = res[f"{t} --help-config"]
            if code != 0:
                problems.append(f"{t} --help-config exited {code}: {listing[-300:]}")
                continue
            known = set(re.findall(r"^\s{2}(\S+)\s", listing, re.M))
            for c in used:
                if t in ("-m pipelines.curate", "-m pipelines.refilter"):
                    problems += curate_setting_problems(c)
                    continue
                for k in sorted(c.keys):
                    if k not in known and not any(x.startswith(k + ".") for x in known):
                        problems.append(f"{c.where}: {t} has no setting {k}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ["README.md", "docs"])
def test_docs_stand_alone(name):
    paths = [REPO / name] if name.endswith(".md") else sorted((REPO / name).rglob("*.md"))
    for p in paths:
        text = p.read_text()
        assert "/work/" not in text and "../shared" not in text, p


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (but - and _), spaces to -."""
    text = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def test_relative_links_and_anchors_resolve():
    bad = []
    for p in doc_files():
        text = re.sub(r"```.*?```", "", p.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (p.parent / path).resolve() if path else p
            if not dest.exists():
                bad.append(f"{p.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md":
                slugs = {_slug(h) for h in re.findall(r"^#+ (.*)$", dest.read_text(), re.M)}
                if anchor not in slugs:
                    bad.append(f"{p.relative_to(REPO)}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


def test_guides_stay_short():
    """Guides (README and docs/*.md) stay readable in one sitting; experiment records go to docs/measurements/."""
    long = {str(p.relative_to(REPO)): n for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
            if (n := len(p.read_text().splitlines())) > 250}
    assert not long, f"over 250 lines (move records to docs/measurements/ or split the page): {long}"
