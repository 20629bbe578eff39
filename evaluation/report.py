"""The HTML page of a run: a table of every metric (random-weight numbers flagged in red) and, per per-clip
metric, a histogram of the generated samples' scores beside the reference clips' (a person looks, not reads).
Plots are matplotlib PNGs embedded in the page, so the file stands alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

PER_CLIP = ("kl", "ia", "it", "ib_va", "ib_iv", "ib_ia", "relsync", "p_align", "alignsync", "av_align", "av_align_pr",
            "av_align_star", "motion")


def _hist_png(name: str, gen: np.ndarray, ref: np.ndarray) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.6), dpi=90)
    both = np.concatenate([gen, ref]) if ref.size else gen
    bins = np.histogram_bin_edges(both, bins=min(30, max(5, both.size // 3))) if both.size else 10
    ax.hist(gen, bins=bins, alpha=0.7, label=f"generated (n={gen.size})")
    if ref.size:
        ax.hist(ref, bins=bins, alpha=0.5, label=f"reference (n={ref.size})")
    ax.set_title(name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _values(rows, col):
    v = np.array([r[col] for r in rows if r.get(col) is not None], np.float64)
    return v[np.isfinite(v)]


def write_report(path: str | Path, summary: dict, rows: list[dict], ref_rows: list[dict]) -> None:
    rnd = set(summary.get("random_weights", []))
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>avsync evaluation</title><style>"
             "body{font-family:sans-serif;margin:1.5em}td,th{padding:2px 10px;text-align:right}"
             ".rnd{color:#b00;font-weight:bold}.grid img{margin:4px}</style></head><body>",
             f"<h1>Evaluation</h1><p>protocol <b>{html.escape(summary['protocol']['name'])}</b>, "
             f"{summary['counts']['generated_samples']} generated samples, {summary['counts']['reference_clips']} reference clips</p>"]
    if rnd or summary.get("generator_random_weights"):
        parts.append("<p class='rnd'>RANDOM WEIGHTS: " + html.escape(", ".join(sorted(rnd)) or "-") +
                     (" (and the generator itself)" if summary.get("generator_random_weights") else "") +
                     " - these numbers are not meaningful.</p>")
    for w in summary.get("warnings", []):
        parts.append(f"<p>warning: {html.escape(w)}</p>")
    parts.append("<table><tr><th>metric</th><th>value</th><th>std</th><th>n</th><th>reference level</th><th></th></tr>")
    for name, m in summary["metrics"].items():
        fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
        flag = "<span class='rnd'>random weights</span>" if m.get("random_weights") else ""
        arrow = "&darr;" if m.get("lower_is_better") else "&uarr;"
        parts.append(f"<tr><td>{name} {arrow}</td><td>{fmt(m.get('value'))}</td><td>{fmt(m.get('std'))}</td>"
                     f"<td>{m.get('n_generated')}</td><td>{fmt(m.get('reference_level'))}</td><td>{flag}</td></tr>")
    parts.append("</table><h2>Per-clip distributions</h2><div class='grid'>")
    for col in PER_CLIP:
        g = _values(rows, col)
        if g.size:
            parts.append(f"<img alt='{col}' src='data:image/png;base64,{_hist_png(col, g, _values(ref_rows, col))}'>")
    parts.append("</div><h2>Models</h2><pre>" + html.escape(json.dumps(summary["models"], indent=1)) + "</pre>")
    errors = [r for r in rows if r.get("error") or r.get("skipped")]
    if errors:
        parts.append("<h2>Skipped or failed</h2><table><tr><th>sample</th><th>why</th></tr>")
        for r in errors[:200]:
            parts.append(f"<tr><td>{html.escape(r['key'])}</td><td style='text-align:left'>{html.escape(r.get('error') or r.get('skipped'))}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    Path(path).write_text("\n".join(parts))


__all__ = ["write_report"]
