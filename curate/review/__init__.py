"""Manual review of a curation run (the AVSync15 supplement's last step: a person accepts or rejects kept
segments, class by class).

- `store`  : which segments are under review (kept segments of the chosen classes) and the decisions file
             `<out>/review.parquet` (segment_id, decision, reviewer, time, label), written atomically under a
             file lock so several reviewers on one run never clobber each other.
- `media`  : shard members by segment id (byte ranges inside the run's tars, no extraction) and cached
             JPEG thumbnails.
- `server` : the local web page (`python -m pipelines.review`), standard-library HTTP only.
"""
