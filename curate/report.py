"""The curation report: one self-contained static HTML page (`<out>/report.html`, figures embedded).

Reads only what a curation run writes under its output folder (`windows.parquet`, `segments.parquet`,
`inputs.parquet`, `stats.json`; any of them may be missing or empty) and shows, as the paper's Fig. 2b
and Sec. 5.2 do: per filter a histogram of its score with the thresholds drawn, the keep rate per stage
and the funnel videos -> windows -> kept windows -> segments, segment counts per class before/after, the
failure table, and thumbnails of kept and dropped windows per drop reason. Scores computed with random
weights are flagged in a banner and on every affected figure.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

SCORE_COLUMNS = ["pixel_diff", "clip_diff", "amplitude", "ia", "it", "psync_a2v", "psync_v2a"]
THUMBS_PER_REASON = 4
MAX_CLASSES_PLOTTED = 40
MAX_FAILURE_ROWS = 200


# ------------------------------------------------------------------------------------------ inputs


def _read_table(path: Path) -> dict[str, list]:
    """A Parquet file as {column: python list}; {} when missing or unreadable."""
    if not path.is_file():
        return {}
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pydict()
    except Exception:
        return {}


def _nrows(t: dict[str, list]) -> int:
    return len(next(iter(t.values()))) if t else 0


def _floats(t: dict[str, list], col: str) -> np.ndarray:
    vals = t.get(col)
    if vals is None:
        return np.full(_nrows(t), np.nan)
    return np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)


def _load(out: Path) -> dict:
    stats = {}
    if (out / "stats.json").is_file():
        try:
            stats = json.loads((out / "stats.json").read_text())
        except ValueError:
            stats = {}
    return {
        "windows": _read_table(out / "windows.parquet"),
        "segments": _read_table(out / "segments.parquet"),
        "inputs": _read_table(out / "inputs.parquet"),
        "stats": stats if isinstance(stats, dict) else {},
    }


def _thresholds(stats: dict) -> dict[str, tuple[float | None, float | None]]:
    """Score column -> (lo, hi) from the stages' params: `<col>_min`/`<col>_max`, else `min`/`max`."""
    out = {}
    for st in stats.get("stages") or []:
        p = st.get("params") or {}
        for col in st.get("columns") or []:
            lo = p.get(f"{col}_min", p.get("min"))
            hi = p.get(f"{col}_max", p.get("max"))
            out[col] = (lo if isinstance(lo, (int, float)) else None, hi if isinstance(hi, (int, float)) else None)
    return out


def _random_columns(data: dict) -> list[str]:
    cols = set()
    for st in data["stats"].get("stages") or []:
        if st.get("random_weights"):
            cols.update(st.get("columns") or [])
    cols.update(data["stats"].get("random_weight_columns") or [])
    for v in data["windows"].get("random_weight_columns") or []:
        if v:
            cols.update(c.strip() for c in str(v).split(",") if c.strip())
    order = {c: i for i, c in enumerate(SCORE_COLUMNS)}
    return sorted(cols, key=lambda c: (order.get(c, 99), c))


def _score_columns(data: dict) -> list[str]:
    cols = list(SCORE_COLUMNS)
    for st in data["stats"].get("stages") or []:
        cols.extend(c for c in st.get("columns") or [] if c not in cols)
    return cols


# ------------------------------------------------------------------------------------------ figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img(b64: str, alt: str, mime: str = "image/png", cls: str = "fig") -> str:
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:{mime};base64,{b64}">'


def _histogram(col: str, allv: np.ndarray, keptv: np.ndarray, lo, hi, random: bool) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 2.9))
    a = allv[np.isfinite(allv)]
    k = keptv[np.isfinite(keptv)]
    if a.size:
        lo_edge, hi_edge = float(a.min()), float(a.max())
        for t in (lo, hi):
            if t is not None:
                lo_edge, hi_edge = min(lo_edge, t), max(hi_edge, t)
        if hi_edge <= lo_edge:
            hi_edge = lo_edge + 1e-3
        bins = np.linspace(lo_edge, hi_edge, 41)
        ax.hist(a, bins=bins, color="#b8c2cc", label=f"all windows ({a.size})")
        if k.size:
            ax.hist(k, bins=bins, color="#2b7bb9", label=f"kept ({k.size})")
    else:
        ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
    for t, name in ((lo, "min"), (hi, "max")):
        if t is not None:
            ax.axvline(t, color="#d62728", ls="--", lw=1.5)
            ax.text(t, 1.0, f" {name} {t:g}", color="#d62728", va="top", ha="left", fontsize=8,
                    transform=ax.get_xaxis_transform())
    title = col + ("  [RANDOM WEIGHTS: not meaningful]" if random else "")
    ax.set_title(title, fontsize=10, color="#b00" if random else "black")
    ax.set_xlabel(col)
    ax.set_ylabel("windows")
    if a.size:
        ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.0, 0.9))
    return _png(fig)


def _funnel(steps: list[tuple[str, int]]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(steps) + 0.8))
    names = [s for s, _ in steps][::-1]
    vals = [v for _, v in steps][::-1]
    ax.barh(names, vals, color="#2b7bb9")
    m = max(vals) if vals and max(vals) > 0 else 1
    for i, v in enumerate(vals):
        ax.text(v + 0.01 * m, i, f"{v:,}", va="center", fontsize=8)
    ax.set_xlim(0, m * 1.18)
    ax.set_title("funnel", fontsize=10)
    return _png(fig)


def _keep_rates(stages: list[dict]) -> str:
    plt = _plt()
    names = [s["name"] + (" (random)" if s.get("random_weights") else "") for s in stages][::-1]
    rates = [100.0 * s["kept"] / s["input"] if s.get("input") else 0.0 for s in stages][::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(stages) + 0.8))
    ax.barh(names, rates, color=["#d62728" if "(random)" in n else "#2b7bb9" for n in names])
    for i, r in enumerate(rates):
        ax.text(r + 1, i, f"{r:.1f} %", va="center", fontsize=8)
    ax.set_xlim(0, 115)
    ax.set_xlabel("windows kept by the stage (% of the windows it scored)")
    ax.set_title("keep rate per stage", fontsize=10)
    return _png(fig)


def _classes(before: dict, after: dict) -> str:
    plt = _plt()
    labels = sorted(before, key=lambda c: (-before[c], c))[:MAX_CLASSES_PLOTTED]
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(labels) + 1.2))
    y = np.arange(len(labels))
    ax.barh(y + 0.2, [before[c] for c in labels], height=0.4, color="#b8c2cc", label="before (merged segments)")
    ax.barh(y - 0.2, [after.get(c, 0) for c in labels], height=0.4, color="#2b7bb9", label="after (kept)")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("segments")
    ax.legend(fontsize=7)
    ax.set_title("segments per class, before / after", fontsize=10)
    return _png(fig)


# ------------------------------------------------------------------------------------------ thumbnails


def grab_frame(path: str, t: float, max_side: int = 192) -> np.ndarray | None:
    """One RGB frame shown at `t` seconds after the first video frame (seek to the keyframe before it,
    decode forward); None when the file cannot be read. Rotation metadata is not applied."""
    import av

    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            tb = float(s.time_base)
            t0 = float(s.start_time * tb) if s.start_time is not None else 0.0
            target = t0 + max(t, 0.0)
            c.seek(int(target / tb), stream=s, backward=True, any_frame=False)
            best = None
            for frame in c.decode(s):
                if frame.pts is None:
                    continue
                best = frame
                if frame.pts * tb >= target - 1e-3:
                    break
            if best is None:
                return None
            w, h = best.width, best.height
            scale = min(1.0, max_side / max(w, h))
            return best.to_ndarray(format="rgb24", width=max(2, int(w * scale)), height=max(2, int(h * scale)))
    except Exception:
        return None


def _jpeg(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode()


def _pick(indices: list[int], n: int) -> list[int]:
    if len(indices) <= n:
        return indices
    pos = np.linspace(0, len(indices) - 1, n).round().astype(int)
    return [indices[i] for i in pos]


# ------------------------------------------------------------------------------------------ page


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "&ndash;"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def _class_counts(data: dict) -> tuple[dict, dict]:
    cls = data["stats"].get("classes") or {}
    before, after = dict(cls.get("before") or {}), dict(cls.get("after") or {})
    if "classes" not in data["stats"] and data["segments"]:  # segments without label are no class
        seg = data["segments"]
        labels = seg.get("label") or []
        kept = seg.get("kept") or [True] * len(labels)
        before = dict(Counter(str(l) for l in labels if l is not None))
        after = dict(Counter(str(l) for l, k in zip(labels, kept) if k and l is not None))
    return before, after


def _stage_rows(data: dict) -> list[dict]:
    """Stages from stats.json; if absent, derived from the windows' scores and drop reasons."""
    stages = [s for s in data["stats"].get("stages") or [] if s.get("run", True)]
    if stages or not data["windows"]:
        return stages
    w = data["windows"]
    out = []
    reasons = w.get("drop_reasons") or [None] * _nrows(w)
    for col in SCORE_COLUMNS:
        v = _floats(w, col)
        n = int(np.isfinite(v).sum())
        if not n:
            continue
        dropped = Counter(r for rs in reasons if rs for r in str(rs).split(",") if r.startswith(col + "_"))
        out.append({"name": col, "columns": [col], "input": n, "kept": n - sum(dropped.values()), "dropped": dict(dropped)})
    return out


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.banner{background:#fde2e1;border:2px solid #d62728;color:#8b0000;padding:10px 14px;font-weight:600;margin:12px 0}
.grid{display:flex;flex-wrap:wrap;gap:10px} .fig{max-width:100%;border:1px solid #eee}
table{border-collapse:collapse;font-size:12px;margin:6px 0} td,th{border:1px solid #ddd;padding:3px 6px;vertical-align:top}
th{background:#f4f6f8;text-align:left} .thumbs{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:10px}
.thumb{font-size:10px;width:200px} .thumb img{width:192px;display:block;border:1px solid #ccc}
.muted{color:#777} code{font-size:12px} td.err{max-width:520px;white-space:pre-wrap;word-break:break-all}
"""

SCRIPT = """
window.__reportErrors = [];
window.addEventListener('error', function (e) { window.__reportErrors.push(String(e.message || e)); }, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-loaded', String(ok));
  document.body.setAttribute('data-errors', String(window.__reportErrors.length));
});
"""


def render_report(out_dir: str | Path) -> str:
    """The report page as an HTML string."""
    out = Path(out_dir)
    data = _load(out)
    w, stats = data["windows"], data["stats"]
    nwin = _nrows(w)
    kept = np.array([bool(k) for k in w.get("kept") or []], dtype=bool) if nwin else np.zeros(0, bool)
    random_cols = _random_columns(data)
    thresholds = _thresholds(stats)
    parts = [f"<h1>Curation report</h1><p class='muted'>{html.escape(str(out.resolve()))}</p>"]

    if random_cols:
        parts.append(
            "<div class='banner' id='random-weights'>Scores computed with RANDOM model weights "
            "(--allow-random-weights): " + ", ".join(f"<code>{html.escape(c)}</code>" for c in random_cols)
            + ". These scores, and every keep/drop decision based on them, are NOT meaningful "
            "(smoke test / demo only).</div>"
        )

    # -- summary and funnel
    inputs = data["inputs"]
    vstats = stats.get("videos") or {}
    status = Counter(inputs.get("status") or [])
    n_videos = vstats.get("total", _nrows(inputs))
    n_ok = vstats.get("ok", status.get("ok", 0))
    wstats = stats.get("windows") or {}
    sstats = stats.get("segments") or {}
    seg = data["segments"]
    seg_kept = sum(1 for k in seg.get("kept") or [] if k)
    steps = [
        ("input videos", int(n_videos or 0)),
        ("videos decoded + windowed", int(n_ok or 0)),
        ("windows (3 s)", int(wstats.get("total", nwin) or 0)),
        ("kept windows", int(wstats.get("kept", int(kept.sum())) or 0)),
        ("merged segments", int(sstats.get("merged", _nrows(seg)) or 0)),
        ("kept segments", int(sstats.get("kept", seg_kept) or 0)),
    ]
    parts.append("<h2>Funnel</h2>")
    parts.append(_table(["step", "count"], [[html.escape(s), f"{v:,}"] for s, v in steps]))
    parts.append(_img(_funnel(steps), "funnel"))
    if status:
        parts.append("<p>videos by status: " + ", ".join(f"{html.escape(str(k))}: {v}" for k, v in sorted(status.items())) + "</p>")

    # -- stages
    stages = _stage_rows(data)
    parts.append("<h2>Stages</h2>")
    if stages:
        rows = []
        for s in stages:
            inp, kp = s.get("input") or 0, s.get("kept") or 0
            drops = ", ".join(f"{html.escape(str(r))}: {n}" for r, n in sorted((s.get("dropped") or {}).items(), key=lambda x: -x[1]))
            params = html.escape(json.dumps(s.get("params") or {}, sort_keys=True))
            flag = " <b style='color:#d62728'>RANDOM WEIGHTS</b>" if s.get("random_weights") else ""
            secs = s.get("seconds")
            rows.append([html.escape(s["name"]) + flag, f"{inp:,}", f"{kp:,}",
                         f"{100.0 * kp / inp:.1f} %" if inp else "&ndash;", drops or "&ndash;",
                         _fmt(float(secs)) if isinstance(secs, (int, float)) else "&ndash;", f"<code>{params}</code>"])
        parts.append(_table(["stage", "scored", "kept", "keep rate", "dropped by reason", "seconds", "params"], rows))
        parts.append(_img(_keep_rates(stages), "keep rate per stage"))
    else:
        parts.append("<p class='muted'>no stage statistics</p>")
    not_run = [s.get("name") for s in stats.get("stages") or [] if not s.get("run", True)]
    if not_run:
        parts.append("<p class='muted'>not run (null scores): " + ", ".join(html.escape(str(n)) for n in not_run) + "</p>")

    # -- score histograms
    parts.append("<h2>Score distributions</h2><p class='muted'>grey: every scored window; blue: windows kept by "
                 "the whole pipeline; red dashed: the stage's thresholds (inclusive).</p><div class='grid'>")
    shown = 0
    for col in _score_columns(data):
        v = _floats(w, col)
        if not np.isfinite(v).any():
            continue
        lo, hi = thresholds.get(col, (None, None))
        parts.append(_img(_histogram(col, v, v[kept] if kept.size == v.size else v[:0], lo, hi, col in random_cols), f"histogram {col}"))
        shown += 1
    parts.append("</div>")
    if not shown:
        parts.append("<p class='muted'>no scores recorded</p>")

    # -- classes
    before, after = _class_counts(data)
    parts.append("<h2>Segments per class (before / after)</h2>")
    if before:
        extra = f" (top {MAX_CLASSES_PLOTTED} of {len(before)} classes by count)" if len(before) > MAX_CLASSES_PLOTTED else ""
        parts.append(f"<p class='muted'>{len(before)} classes before, {sum(1 for c in after if after[c])} after{extra}.</p>")
        parts.append(_img(_classes(before, after), "segments per class"))
        dropped = (stats.get("classes") or {}).get("dropped") or []
        if dropped:
            mn = (stats.get("classes") or {}).get("min_segments_per_class")
            parts.append(f"<p>classes dropped by category balance (fewer than {_fmt(mn)} segments): "
                         + ", ".join(html.escape(str(c)) for c in dropped) + "</p>")
    unlabeled = (stats.get("classes") or {}).get("unlabeled_segments")
    if unlabeled:
        parts.append(f"<p>{unlabeled} kept segments have no label: videos without a label are not a class, "
                     "so class balance never drops them.</p>")
    elif not before:
        parts.append("<p class='muted'>no segments</p>")

    # -- failures
    parts.append("<h2>Failed and dropped videos</h2>")
    rows = []
    for i in range(_nrows(inputs)):
        st = inputs.get("status", [None] * (i + 1))[i]
        if st == "ok":
            continue
        err = inputs.get("error", [None] * (i + 1))[i] or ""
        rows.append([html.escape(str(inputs.get("path", [""] * (i + 1))[i])), html.escape(str(st)),
                     html.escape(str(inputs.get("reason", [None] * (i + 1))[i] or "")),
                     f"<span>{html.escape(str(err)[:400])}</span>"])
    if rows:
        more = f"<p class='muted'>first {MAX_FAILURE_ROWS} of {len(rows)}</p>" if len(rows) > MAX_FAILURE_ROWS else ""
        parts.append(_table(["path", "status", "reason", "error"], rows[:MAX_FAILURE_ROWS], cls="failures") + more)
    else:
        parts.append("<p class='muted'>none</p>")

    # -- thumbnails
    parts.append("<h2>Examples per drop reason</h2><p class='muted'>the frame at the middle of each window</p>")
    groups: dict[str, list[int]] = defaultdict(list)
    reasons = w.get("drop_reason") or [None] * nwin
    for i in range(nwin):
        groups[reasons[i] or "kept"].append(i)
    order = (["kept"] if "kept" in groups else []) + sorted((r for r in groups if r != "kept"), key=lambda r: -len(groups[r]))
    score_cols = [c for c in _score_columns(data) if c in w]
    for reason in order:
        cells = []
        for i in _pick(groups[reason], THUMBS_PER_REASON):
            start, end = float(w["start"][i]), float(w["end"][i])
            frame = grab_frame(w["path"][i], 0.5 * (start + end)) if w.get("path") else None
            sc = ", ".join(f"{c}={w[c][i]:.3f}" + (" (random weights)" if c in random_cols else "")
                           for c in score_cols if w[c][i] is not None)
            cap = f"{html.escape(str(w.get('video_id', [''] * nwin)[i]))} {start:.1f}-{end:.1f} s<br>{html.escape(str((w.get('label') or [None] * nwin)[i] or ''))}<br><span class='muted'>{html.escape(sc)}</span>"
            img = _img(_jpeg(frame), f"{reason} thumbnail", "image/jpeg", "") if frame is not None else "<div class='muted'>(no frame)</div>"
            cells.append(f"<div class='thumb'>{img}{cap}</div>")
        parts.append(f"<h3>{html.escape(reason)} <span class='muted'>({len(groups[reason]):,} windows)</span></h3><div class='thumbs'>{''.join(cells)}</div>")
    if not order:
        parts.append("<p class='muted'>no windows</p>")

    body = "\n".join(parts)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Curation report</title>"
        f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>{body}</body></html>"
    )


def write_report(out_dir: str | Path) -> Path:
    """Write `<out_dir>/report.html` (atomically) and return its path."""
    out = Path(out_dir)
    page = render_report(out)
    path = out / "report.html"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
