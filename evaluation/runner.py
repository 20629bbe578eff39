"""One evaluation run: settings, model loading (failing at start on missing weights), reference and generated
clips scored once each, set metrics from the collected features, outputs written.

Order: read the generated folder and sidecars (cheap) -> load every network the chosen metrics need (missing
weights stop the run here, naming what to provide, unless random weights are allowed) -> stream the reference
shards, cutting the protocol's clips (features for the distribution metrics, weight-free scores as a
reference level) and the clips the sidecars name (their phi, first-frame IA, label, first frame) -> decode each
generated sample once and score it -> Frechet / MMD / KL / means -> metrics.json, per_sample.parquet,
report.html. A sample that cannot be decoded is recorded with its error and the run goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation.av_align import AVAlignConfig

log = logging.getLogger("evaluation")

ALL_METRICS = ("fvd", "kvd", "fid", "fad", "kl", "ib", "ia", "it", "relsync", "alignsync", "av_align", "av_align_pr",
               "av_align_star", "motion")
NEEDS = {
    "i3d": {"fvd", "kvd"}, "inception": {"fid"}, "vggish": {"fad"}, "melception": {"fad"}, "passt": {"kl"},
    "imagebind": {"ib", "ia", "it", "alignsync"}, "sync": {"relsync", "alignsync"},
    "reference": {"fvd", "kvd", "fid", "fad", "kl", "relsync", "alignsync"},
    "flow": {"motion", "av_align", "av_align_pr", "av_align_star"},
}
LOWER_IS_BETTER = {"fvd", "kvd", "fid", "fad", "kl", "av_align_star"}


@dataclass
class NetConfig:
    weights: str = ""
    """local path or URL of the weights ('' = the public URL; see docs/evaluation.md)"""
    preset: str = "real"
    """'real' = the published network; 'tiny' = toy size, random init (tests; needs allow_random_weights)"""


@dataclass
class ImageBindConfig:
    checkpoint: str = ".checkpoints/imagebind_huge.pth"
    """imagebind_huge.pth: local path or URL (as the curation's imagebind stage)"""
    preset: str = "huge"
    """'huge' = the released model; 'tiny' = toy size, random init"""


@dataclass
class EvalConfig:
    generated: str = ""
    """folder of generated <name>.mp4 (+ <name>.json sidecars)"""
    reference: str = ""
    """reference (test) shard pattern(s), e.g. 'out/shards/test-*.tar'"""
    out: str = "eval"
    """output folder: metrics.json, per_sample.parquet, report.html"""
    metrics: list[str] = field(default_factory=lambda: list(ALL_METRICS))
    """metrics to compute (or 'all'): fvd,kvd,fid,fad,kl,ib,ia,it,relsync,alignsync,av_align,av_align_pr,av_align_star,motion"""
    protocol: str = "none"
    """avsync15 | jointdit | none (see docs/evaluation.md)"""
    dataset: str = "avsync15"
    """avsync15 | greatesthits | landscape: GreatestHits clip size (avsync15 protocol) / 10 s segments (jointdit);
    jointdit's expected samples per test image (5 / 3 / 3)"""
    seed: int = 0
    """seed of the jointdit protocol's random reference clips and of KVD subsets"""
    allow_random_weights: bool = False
    """run networks whose weights are missing with random init; every affected number is flagged"""
    device: str = "cpu"
    """torch device of the networks (cpu, cuda)"""
    batch_size: int = 16
    """frames or clips per network call"""
    clips_per_batch: int = 8
    """clips gathered before the networks run on them together"""
    kvd_subsets: int = 0
    """0 = KVD on the whole sets; N = mean over N random subsets (KID style)"""
    kvd_subset_size: int = 1000
    i3d: NetConfig = field(default_factory=NetConfig)
    inception: NetConfig = field(default_factory=NetConfig)
    vggish: NetConfig = field(default_factory=NetConfig)
    melception: NetConfig = field(default_factory=NetConfig)
    fad_network: str = ""
    """FAD features: vggish | melception ('' = the protocol's: melception under jointdit, else vggish)"""
    passt: NetConfig = field(default_factory=NetConfig)
    imagebind: ImageBindConfig = field(default_factory=ImageBindConfig)
    sync_checkpoint: str = "sync_classifier/checkpoints/small"
    """sync classifier folder (config.json + model.safetensors) for RelSync / AlignSync"""
    av_align: AVAlignConfig = field(default_factory=AVAlignConfig)

    def __post_init__(self):
        from evaluation.protocols import PROTOCOLS

        if isinstance(self.metrics, str):
            self.metrics = [m.strip() for m in self.metrics.split(",") if m.strip()]
        if self.metrics == ["all"]:
            self.metrics = list(ALL_METRICS)
        from common.config import closest

        for m in self.metrics:
            if m not in ALL_METRICS:
                near = closest(m, ALL_METRICS)
                raise ValueError(f"unknown metric {m!r}" + (f" (did you mean {near!r}?)" if near else "") + f"; known: {','.join(ALL_METRICS)}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOLS)}")
        from evaluation.protocols import DATASETS

        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: {', '.join(DATASETS)}")
        if self.fad_network not in ("", "vggish", "melception"):
            raise ValueError(f"fad_network must be vggish or melception, got {self.fad_network!r}")
        for name in ("i3d", "inception", "vggish", "melception", "passt"):
            if getattr(self, name).preset not in ("real", "tiny"):
                raise ValueError(f"{name}.preset must be 'real' or 'tiny'")

    def needs(self, what: str) -> bool:
        if what in ("vggish", "melception") and what != self.fad_net():
            return False
        return bool(NEEDS[what] & set(self.metrics))

    def fad_net(self) -> str:
        from evaluation.protocols import protocol_for

        return self.fad_network or protocol_for(self.protocol, self.dataset).fad_network


# ----------------------------------------------------------------------------------------------- models


@dataclass
class Models:
    extractors: dict = field(default_factory=dict)
    imagebind: object = None
    imagebind_random: bool = False
    scorer: object = None
    sync_random: bool = False
    batch_size: int = 16

    def info(self, cfg: EvalConfig) -> dict:
        out = {k: e.info() for k, e in self.extractors.items()}
        if self.imagebind is not None:
            out["imagebind"] = {"network": f"ImageBind ({cfg.imagebind.preset})", "weights": None if self.imagebind_random else cfg.imagebind.checkpoint,
                                "random_weights": self.imagebind_random}
        if self.scorer is not None:
            out["sync_classifier"] = {"network": "sync classifier (SyncScorer)", "weights": cfg.sync_checkpoint,
                                      "random_weights": self.sync_random}
            if self.sync_random:
                out["sync_classifier"]["training_data"] = self.scorer.training_data
                out["sync_classifier"]["note"] = (f"trained on {self.scorer.training_data} data, not curation-grade: "
                                                  "RelSync/AlignSync from it are flagged like random weights")
        return out

    def random_metrics(self, cfg: EvalConfig) -> set[str]:
        """metrics whose numbers come (partly) from random-init networks"""
        flagged = set()
        for name, e in self.extractors.items():
            if e.random:
                flagged |= NEEDS[name]
        if self.imagebind is not None and self.imagebind_random:
            flagged |= {"ib", "ia", "it", "alignsync", "p_align"}
        if self.scorer is not None and self.sync_random:
            flagged |= {"relsync", "alignsync"}
        return flagged & (set(cfg.metrics) | {"p_align"})


class EvaluationError(Exception):
    """Cannot start: missing weights, missing package, nothing to evaluate (the message says what to do)."""


def load_models(cfg: EvalConfig) -> Models:
    """Every network the chosen metrics need, or EvaluationError naming each missing weight file at once."""
    from common.hub import prepare_hub
    from evaluation.extractors import EXTRACTORS, WeightsMissing

    prepare_hub()
    models, problems = Models(batch_size=cfg.batch_size), []
    for name, cls in EXTRACTORS.items():
        if not cfg.needs(name):
            continue
        nc: NetConfig = getattr(cfg, name)
        try:
            models.extractors[name] = cls(weights=nc.weights, preset=nc.preset, device=cfg.device,
                                          batch_size=cfg.batch_size).load(cfg.allow_random_weights)
        except WeightsMissing as e:
            problems.append(str(e))
        except ImportError as e:
            problems.append(f"{name}: {e} (pip install 'avsync[eval]')")
    if cfg.needs("imagebind"):
        from evaluation.imagebind_metrics import load_encoder

        try:
            models.imagebind, models.imagebind_random = load_encoder(cfg.imagebind.preset, cfg.imagebind.checkpoint, cfg.device,
                                                                     cfg.allow_random_weights)
        except FileNotFoundError as e:
            problems.append(str(e))
        except ImportError as e:
            problems.append(f"ImageBind: {e} (pip install 'avsync[imagebind]')")
    if cfg.needs("sync"):
        from evaluation.sync_metrics import load_scorer

        try:
            models.scorer = load_scorer(cfg.sync_checkpoint, cfg.device)
            # a classifier trained on synthetic videos only (or of unknown provenance) gives numbers that are not
            # meaningful for real samples: flagged like random weights, as the curation flags its P_Sync
            models.sync_random = not models.scorer.curation_grade
        except FileNotFoundError as e:
            problems.append(str(e))
    if problems:
        raise EvaluationError("missing weights: " + "; ".join(problems) + " (or pass --allow-random-weights to run "
                              "random-init networks, every number they give flagged)")
    return models


# ----------------------------------------------------------------------------------------------- scoring


def metric_variants(cfg: EvalConfig, protocol, models: Models) -> dict:
    """Per metric: which rules and feature network give its number (recorded in metrics.json)."""
    frames = "2..N" if protocol.skip_first_frame else "all"
    ex = models.extractors
    out = {
        "fvd": {"network": "i3d", "frames": "all"}, "kvd": {"network": "i3d", "frames": "all"},
        "fid": {"network": "inception (pytorch-fid FID weights)", "input": protocol.fid_input, "frames": frames},
        "fad": {"network": cfg.fad_net()},
        "ia": {"frames": frames}, "it": {"frames": frames}, "p_align": {"frames": frames},
        "alignsync": {"p_align_frames": frames},
    }
    if "inception" in ex:
        out["fid"]["input"] = ex["inception"].info()["input"]
    av = {"version": cfg.av_align.version, "peak_min_px": cfg.av_align.peak_min,
          "rules": "each video peak matched once" if cfg.av_align.version == "current" else "a video peak may match many onsets"}
    out["av_align"] = av
    out["av_align_pr"] = {"peak_min_px": cfg.av_align.peak_min}
    out["av_align_star"] = {"floor": cfg.av_align.star_floor}
    if models.scorer is not None:
        cut = ("the authors' RelSync cut from the files (asva)" if models.scorer.preprocess == "asva"
               else "this project's cut of the decoded clip (native)")
        out["relsync"] = {"preprocess": models.scorer.preprocess, "clip": cut}
        out["alignsync"]["relsync_preprocess"] = models.scorer.preprocess
    return out


def _sync_cut(video, start, scorer, source=None) -> dict:
    """The sync classifier's clip (its spec: 12 frames at 6 fps, 2 s of audio) from `start`, as ClipInput
    fields. Under the scorer's preprocess=asva (the authors' checkpoint) the clip is cut from the file itself
    as their RelSync / AlignSync evaluation does (`sync_metrics.sync_inputs`: first frame at or after each
    time, square crop, bilinear 256, bicubic 224; the audio frames of the span); `source` is the file (a
    generated sample's path) or None for a reference segment (its encoded mp4 from the shard)."""
    from evaluation.protocols import cut

    if getattr(scorer, "preprocess", "native") == "asva":
        import io

        from evaluation.sync_metrics import sync_inputs

        src = source if source is not None else video.source.get("mp4_bytes")
        if src is None:
            raise ValueError("preprocess=asva needs the clip's file (no encoded mp4 with this reference segment)")
        src = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src
        return {"sync_inputs": sync_inputs(src, start, scorer.spec)}
    frames, audio, _ = cut(video, start, scorer.spec.fps, scorer.spec.num_frames, None)
    return {"sync_frames": frames, "sync_audio": audio}


def _kl_softmax(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """KL(softmax(p) || softmax(q)) (reference || generated), as audioldm_eval's softmax KL."""
    def logsoftmax(x):
        x = x - x.max()
        return x - math.log(np.exp(x).sum())

    lp, lq = logsoftmax(np.asarray(p_logits, np.float64)), logsoftmax(np.asarray(q_logits, np.float64))
    return float(np.sum(np.exp(lp) * (lp - lq)))


def _scalars(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if not k.startswith("_") and np.isscalar(v)}


# ----------------------------------------------------------------------------------------------- the run


@dataclass
class EvalResult:
    out: Path
    metrics: dict
    per_sample: list


def run(cfg: EvalConfig, progress: bool = True) -> EvalResult:
    from tqdm import tqdm

    from common.cli import resolve_files
    from media.decode import DecodeConfig, MediaError, decode_video
    from evaluation.protocols import clip_starts, cut, protocol_for
    from evaluation.samples import discover_generated, iter_reference_segments, load_image
    from evaluation.scoring import Batcher, ClipInput, Collected, score_clips
    from evaluation.sync_metrics import p_align, relsync

    t0 = time.time()
    protocol = protocol_for(cfg.protocol, cfg.dataset)
    if not cfg.generated or not Path(cfg.generated).is_dir():
        raise EvaluationError(f"--generated {cfg.generated!r} is not a folder")
    items = discover_generated(cfg.generated)
    if not items:
        raise EvaluationError(f"no .mp4 files under {cfg.generated!r}")
    shards = resolve_files(cfg.reference, "reference shards") if cfg.reference else []
    if cfg.needs("reference") and not shards:
        need = sorted(NEEDS["reference"] & set(cfg.metrics))
        raise EvaluationError(f"metrics {','.join(need)} need --reference shards (or choose --metrics without them)")
    log.info("%d generated samples, %d reference shard(s), protocol %s, metrics %s", len(items), len(shards), protocol.name,
             ",".join(cfg.metrics))
    models = load_models(cfg)
    if "inception" in models.extractors:
        models.extractors["inception"].input_mode = protocol.fid_input
    flagged = models.random_metrics(cfg)
    if flagged:
        log.warning("RANDOM-INIT networks: %s will be flagged as not meaningful", ",".join(sorted(flagged)))
    generator_random = any(bool(it.sidecar.get("random_weights")) for it in items)
    warnings: list[str] = []
    rng = np.random.default_rng(cfg.seed)
    decode = DecodeConfig(short_side=0, max_fps=1000.0, audio_rate=16000)
    text_cache: dict = {}
    metrics = set(cfg.metrics)
    skip = protocol.skip_first_frame
    use_sync = models.scorer is not None

    # ---- references: the protocol's clips (set features, reference levels) + the clips the sidecars name
    wanted: dict[str, set] = {}
    for it in items:
        if it.reference:
            wanted.setdefault(it.reference, set()).add(round(it.clip_start, 3))
    ref_coll, ref_rows, paired = Collected(), [], {}
    paired_models = Models({k: v for k, v in models.extractors.items() if k == "passt"}, models.imagebind, models.imagebind_random,
                           models.scorer, models.sync_random, cfg.batch_size)
    ref_batch = Batcher(cfg.clips_per_batch, lambda cs: score_clips(cs, metrics, models, skip, ref_coll, text_cache, cfg.av_align))
    pair_batch = Batcher(cfg.clips_per_batch, lambda cs: score_clips(cs, set(), paired_models, skip, Collected(), text_cache,
                                                                      cfg.av_align))
    n_ref_videos = 0
    bar = tqdm(desc="reference", unit="clip", disable=not progress or not shards)  # counts scored clips

    def ref_done(rec: dict, key: str, start: float) -> None:
        ref_rows.append({"key": key, "start": start, **_scalars(rec)})
        bar.update(1)

    ref_failed: list[dict] = []
    for key, video, meta in iter_reference_segments(shards, decode, ref_failed):
        n_ref_videos += 1
        label = meta.get("label")
        for start in clip_starts(video.duration, protocol, rng):
            frames, audio, fps = cut(video, start, protocol.fps, protocol.num_frames, protocol.size)
            sync = _sync_cut(video, start, models.scorer) if use_sync else {}
            ref_batch.add(ClipInput(key, frames, audio, fps, video.audio_rate, label, None, **sync),
                          lambda rec, key=key, start=start: ref_done(rec, key, start))
        for start in wanted.pop(key, ()):
            frames, audio, fps = cut(video, start, protocol.fps, protocol.num_frames, protocol.size)
            info = paired[(key, start)] = {"label": label, "first_frame": frames[0]}
            sync = _sync_cut(video, start, models.scorer) if use_sync else {}
            pair_batch.add(ClipInput(key, frames, audio, fps, video.audio_rate, label, None, **sync),
                           lambda rec, info=info: info.update({k: rec[k] for k in ("phi", "_ia_first", "_passt_logits") if k in rec}))
    ref_batch.flush()
    pair_batch.flush()
    bar.close()
    bad_refs = {f["key"] for f in ref_failed}
    for f in ref_failed:
        warnings.append(f"reference {f['key'] or 'shard'} in {f['shard']} could not be decoded ({f['error']}); skipped")
    for key in wanted:
        if key not in bad_refs:
            warnings.append(f"reference {key!r} named by sidecars is not in the reference shards")

    # ---- generated samples
    rows, gen_coll, per_ref_counts = [], Collected(), {}

    def finish(rec: dict, row: dict, ref: dict | None, skipped: list[str]) -> None:
        if "kl" in metrics:
            if ref is not None and "_passt_logits" in ref:
                row["kl"] = _kl_softmax(ref["_passt_logits"], rec["_passt_logits"])
            else:
                skipped.append("kl: no paired reference")
        if use_sync:
            row["phi"] = rec.get("phi")
            if ref is not None and "phi" in ref:
                row["phi_reference"] = ref["phi"]
                row["relsync"] = float(relsync(rec["phi"], ref["phi"]))
            else:
                skipped.append("relsync/alignsync: no paired reference")
        if "alignsync" in metrics and "relsync" in row and "ia_frames" in rec:
            row["p_align"] = p_align(rec["ia_frames"], ref["_ia_first"])
            row["alignsync"] = row["relsync"] * row["p_align"]
        if models.imagebind is not None and not row.get("label") and "it" in metrics:
            skipped.append("it: no label")
        if models.imagebind is not None and row.get("image_source") is None and "ib" in metrics:
            skipped.append("ib_iv/ib_ia: no conditioning image")
        row.update({k: v for k, v in _scalars(rec).items() if k != "ia_frames"})
        row["skipped"] = "; ".join(skipped) or None
        row["random_weights"] = ",".join(sorted(flagged)) or None
        gen_bar.update(1)

    gen_batch = Batcher(cfg.clips_per_batch, lambda cs: score_clips(cs, metrics, models, skip, gen_coll, text_cache, cfg.av_align))
    gen_bar = tqdm(total=len(items), desc="generated", unit="sample", disable=not progress)  # counts scored samples
    for it in items:
        row = {"key": it.key, "path": str(it.path), "reference": it.reference, "clip_start": it.clip_start,
               "generator_random_weights": bool(it.sidecar.get("random_weights", False)), "error": None}
        rows.append(row)
        skipped = list(it.problems)
        try:
            video = decode_video(it.path, decode)
        except MediaError as e:
            row["error"] = f"decode: {e}"
            gen_bar.update(1)
            continue
        if video.audio is None:
            video.audio = np.zeros(int(video.duration * video.audio_rate), np.float32)
            skipped.append("no audio track (silence used)")
        frames, audio, fps = cut(video, 0.0, protocol.fps, protocol.num_frames, protocol.size)
        ref = paired.get((it.reference, round(it.clip_start, 3))) if it.reference else None
        if it.reference:
            per_ref_counts[it.reference] = per_ref_counts.get(it.reference, 0) + 1
            if ref is None:
                skipped.append("reference not found in the reference shards")
        label = it.sidecar.get("label") or (ref or {}).get("label")
        image, image_source = None, None
        if it.sidecar.get("image"):
            img_path = Path(it.sidecar["image"])
            img_path = img_path if img_path.is_absolute() else it.path.parent / img_path
            try:
                image, image_source = load_image(img_path), "sidecar"
            except Exception as e:  # noqa: BLE001 - recorded, the sample goes on
                skipped.append(f"conditioning image {str(img_path)!r} unreadable: {type(e).__name__}: {e}")
        if image is None and ref is not None:
            image, image_source = ref["first_frame"], "reference first frame"
        row["label"], row["image_source"] = label, image_source
        sync = _sync_cut(video, 0.0, models.scorer, str(it.path)) if use_sync else {}
        gen_batch.add(ClipInput(it.key, frames, audio, fps, video.audio_rate, label, image, **sync),
                      lambda rec, row=row, ref=ref, skipped=skipped: finish(rec, row, ref, skipped))
    gen_batch.flush()
    gen_bar.close()

    # ---- set metrics
    results: dict = {}

    variants = metric_variants(cfg, protocol, models)

    def put(name, value, n_gen=None, n_ref=None, **extra):
        results[name] = {"value": value, "n_generated": n_gen, "n_reference": n_ref,
                         "random_weights": name in flagged, "lower_is_better": name in LOWER_IS_BETTER,
                         "variant": variants.get(name), **extra}

    from evaluation.statistics import frechet_distance, kernel_distance

    def feats(lst):
        return np.concatenate(lst) if lst else np.zeros((0, 1))

    for name, key, fn in (("fvd", "i3d", frechet_distance), ("kvd", "i3d", None), ("fid", "inception", frechet_distance),
                          ("fad", cfg.fad_net(), frechet_distance)):
        if name not in cfg.metrics:
            continue
        g, r = feats(getattr(gen_coll, key)), feats(getattr(ref_coll, key))
        if len(g) < 2 or len(r) < 2:
            put(name, None, len(g), len(r), skipped=f"needs at least 2 feature vectors per side ({len(g)} generated, {len(r)} reference)")
            continue
        val = fn(g, r) if fn else kernel_distance(g, r, cfg.kvd_subsets, cfg.kvd_subset_size, cfg.seed)
        put(name, val, len(g), len(r), features=int(g.shape[1]))
    per_clip = {"kl": "kl", "ia": "ia", "it": "it", "relsync": "relsync", "alignsync": "alignsync", "av_align": "av_align",
                "av_align_pr": "av_align_pr", "av_align_star": "av_align_star", "motion": "motion"}
    ib_cols = ["ib_va", "ib_iv", "ib_ia"] if "ib" in cfg.metrics else []
    cols = [c for m, c in per_clip.items() if m in cfg.metrics] + ib_cols + (["p_align"] if "alignsync" in cfg.metrics else [])
    for c in cols:
        vals = np.array([r[c] for r in rows if r.get(c) is not None], np.float64)
        finite = vals[np.isfinite(vals)]
        ref_vals = np.array([r[c] for r in ref_rows if r.get(c) is not None], np.float64)
        ref_vals = ref_vals[np.isfinite(ref_vals)]
        name = c
        flagged_name = "ib" if c in ib_cols else ("alignsync" if c == "p_align" else c)
        results[name] = {"value": float(finite.mean()) if finite.size else None, "std": float(finite.std(ddof=1)) if finite.size > 1 else None,
                         "n_generated": int(finite.size), "n_undefined": int(vals.size - finite.size),
                         "reference_level": float(ref_vals.mean()) if ref_vals.size else None,
                         "random_weights": flagged_name in flagged, "lower_is_better": c in LOWER_IS_BETTER,
                         "variant": variants.get(c)}
    expected = protocol.samples_per_reference.get(cfg.dataset)
    if expected and per_ref_counts:
        short = {k: v for k, v in per_ref_counts.items() if v != expected}
        if short:
            warnings.append(f"{len(short)} reference(s) do not have {expected} generated samples each (protocol {protocol.name}, "
                            f"dataset {cfg.dataset})")
    if generator_random:
        warnings.append("generated samples come from a random-init generator (sidecar random_weights): the numbers measure noise")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    from common.config import to_dict

    summary = {
        "metrics": results,
        "protocol": dataclasses.asdict(protocol) | {"dataset": cfg.dataset},
        "variants": {k: v for k, v in variants.items() if k in results},
        "models": models.info(cfg),
        "random_weights": sorted(flagged),
        "generator_random_weights": generator_random,
        "counts": {"generated_samples": len(items), "generated_decoded": sum(r["error"] is None for r in rows),
                   "generated_errors": sum(r["error"] is not None for r in rows), "reference_videos": n_ref_videos,
                   "reference_clips": len(ref_rows), "paired": sum(r.get("reference") is not None and "reference not found" not in (r.get("skipped") or "") for r in rows)},
        "warnings": warnings,
        "config": to_dict(cfg),
        "seconds": round(time.time() - t0, 2),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=1, default=str))
    _write_parquet(out / "per_sample.parquet", rows)
    from evaluation.report import write_report

    write_report(out / "report.html", summary, rows, ref_rows)
    return EvalResult(out, summary, rows)


def _write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = list(dict.fromkeys(k for r in rows for k in r))
    cols = {}
    for k in keys:
        vals = [r.get(k) for r in rows]
        if all(v is None or isinstance(v, (bool, np.bool_)) for v in vals):
            cols[k] = pa.array(vals, pa.bool_())
        elif all(v is None or isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in vals):
            cols[k] = pa.array([None if v is None else float(v) for v in vals], pa.float64())
        else:
            cols[k] = pa.array([None if v is None else str(v) for v in vals], pa.string())
    pq.write_table(pa.table(cols), path)


def summary_lines(result: EvalResult) -> list[str]:
    lines = []
    for name, m in result.metrics["metrics"].items():
        v = m.get("value")
        flag = "  [RANDOM WEIGHTS: not meaningful]" if m.get("random_weights") else ""
        lines.append(f"{name:>14}: {'n/a' if v is None else f'{v:.4f}'}{flag}")
    return lines


__all__ = ["ALL_METRICS", "EvalConfig", "NetConfig", "ImageBindConfig", "Models", "EvaluationError", "load_models", "run",
           "EvalResult", "summary_lines"]
