"""Evaluation of generated sounding videos: the papers' metrics (FVD, KVD, FID, FAD, KL, ImageBind scores, IA/IT,
RelSync, AlignSync, AV-Align and its variants, motion score) under the papers' test protocols.

Read top-down: `runner` (one run: settings, networks, references, generated samples, set metrics, outputs) ->
`samples` (generated mp4 + sidecar, reference shards) -> `protocols` (which clips) -> `scoring` (clips in
batches through every network once) -> metric families: `statistics` (Frechet, MMD), `extractors` (I3D,
Inception, VGGish, PaSST), `imagebind_metrics`, `sync_metrics`, `av_align`, `motion` -> `report` (HTML).
"""
