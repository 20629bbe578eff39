"""The review web page: a standard-library HTTP server on localhost over one curation run.

Routes:
- `GET /`                      the page (static/index.html, review.js, review.css)
- `GET /api/state`             the reviewer, classes with progress, every segment under review with its
                               scores and current decision
- `POST /api/decision`         `{"segment_id": ..., "decision": "accept" | "reject" | null}` (null withdraws);
                               refused (403) for a segment outside this reviewer's classes
- `GET /media/<segment>.mp4`   the segment's shard mp4 (h264 + aac), with HTTP Range support for seeking
- `GET /thumb/<segment>/<i>.jpg` thumbnail i (first, middle, last frame), cached on disk

Every decision goes straight to `<out>/review.parquet` (see `curate.review.store`), so a restarted server
shows what was decided before, and servers of several reviewers on one run share it safely.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

from common.cli import UsageError
from curate.review.media import ShardIndex, Thumbnails
from curate.review.store import DecisionStore, ReviewSegment, class_list, load_segments, run_folder

log = logging.getLogger("curate.review")
STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class ReviewConfig:
    out: str = ""
    """folder of a finished curation run (segments.parquet, shards/)"""
    reviewer: str = ""
    """your name, stored with every decision"""
    classes: str = ""
    """classes this reviewer reviews: avsync15, vggss, a file (one class per line) or a,b,c; empty = all"""
    host: str = "127.0.0.1"
    """address to listen on (localhost by default: the page has no authentication)"""
    port: int = 8765
    """port to listen on (0 = any free port)"""
    thumbnails: int = 3
    """thumbnails per segment (first, ..., last frame)"""
    thumb_size: int = 240
    """longest side of a thumbnail in pixels"""


class ReviewApp:
    """Everything a request needs: the segments under review, their media, the decisions store."""

    def __init__(self, cfg: ReviewConfig):
        if not cfg.reviewer or not cfg.reviewer.strip():
            raise UsageError("--reviewer NAME is required (it is stored with every decision)")
        if cfg.thumbnails < 1:
            raise UsageError(f"thumbnails={cfg.thumbnails}: must be at least 1")
        self.cfg = cfg
        self.out = run_folder(cfg.out)
        self.reviewer = cfg.reviewer.strip()
        allow = class_list(cfg.classes)
        self.segments: list[ReviewSegment] = load_segments(self.out, allow, cfg.classes)
        if not self.segments:
            raise UsageError(f"the run in {cfg.out!r} has no kept segment to review")
        self.by_id = {s.segment_id: s for s in self.segments}
        self.classes = list(dict.fromkeys(s.cls for s in self.segments))
        self.missing_classes = [c for c in (allow.classes if allow else []) if c not in self.classes]
        shard_dir = self.out / "shards"
        self.index = ShardIndex(shard_dir)
        missing = [s.segment_id for s in self.segments if s.segment_id not in self.index]
        if len(missing) == len(self.segments):
            raise UsageError(f"no shard holds the segments under review ({shard_dir}/ has "
                             f"{len(list(shard_dir.glob('*.tar')))} tars): was the run score_only? "
                             f"`python -m pipelines.refilter --out {cfg.out}` writes shards")
        self.no_media = set(missing)
        if missing:
            log.warning("%d segment(s) have no media in the shards (shown without video): %s", len(missing),
                        ", ".join(missing[:5]))
        self.thumbs = Thumbnails(self.index, self.out / "review_cache" / "thumbs", cfg.thumbnails, cfg.thumb_size)
        self.store = DecisionStore(self.out)
        self.random_weight_columns = self._random_columns()
        self.media_requests: Counter = Counter()
        """'full' / 'range' / 'unsatisfiable' media responses served (what the browser asked for)."""

    def _random_columns(self) -> list[str]:
        p = self.out / "stats.json"
        try:
            return list(json.loads(p.read_text()).get("random_weight_columns") or []) if p.is_file() else []
        except ValueError:
            return []

    def state(self) -> dict:
        decisions = self.store.read()
        segs = []
        progress: dict[str, Counter] = {c: Counter() for c in self.classes}
        for s in self.segments:
            d = decisions.get(s.segment_id)
            row = s.to_json()
            row.update(decision=d.decision if d else None, reviewer=d.reviewer if d else None,
                       time=d.time if d else None, media=s.segment_id not in self.no_media)
            segs.append(row)
            progress[s.cls]["total"] += 1
            if d:
                progress[s.cls][d.decision] += 1
        return {
            "reviewer": self.reviewer, "run": str(self.out), "thumbnails": self.cfg.thumbnails,
            "random_weight_columns": self.random_weight_columns, "missing_classes": self.missing_classes,
            "classes": [{"name": c, "total": progress[c]["total"], "accept": progress[c]["accept"],
                         "reject": progress[c]["reject"]} for c in self.classes],
            "segments": segs,
        }

    def decide(self, segment_id: str, decision: str | None) -> tuple[int, dict]:
        seg = self.by_id.get(segment_id)
        if seg is None:
            return HTTPStatus.FORBIDDEN, {"error": f"segment {segment_id!r} is not under review by {self.reviewer} "
                                                   f"(not a kept segment of this reviewer's classes)"}
        if decision not in ("accept", "reject", None):
            return HTTPStatus.BAD_REQUEST, {"error": f"decision must be accept, reject or null, not {decision!r}"}
        d = self.store.set(segment_id, decision, self.reviewer, seg.label)
        log.info("%s %s (%s)", decision or "withdrawn", segment_id, self.reviewer)
        return HTTPStatus.OK, {"segment_id": segment_id, "decision": d.decision if d else None,
                               "reviewer": d.reviewer if d else None, "time": d.time if d else None}


class Handler(BaseHTTPRequestHandler):
    app: ReviewApp  # set on the server class built by make_server
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: decisions are logged by the app
        log.debug("%s " + fmt, self.address_string(), *args)

    # ----------------------------------------------------------------------------------- dispatch

    def do_HEAD(self):
        self._get(head=True)

    def do_GET(self):
        self._get(head=False)

    def _get(self, head: bool):
        path = unquote(urlparse(self.path).path)
        try:
            if path in ("/", "/index.html"):
                return self._static("index.html", head)
            if path.startswith("/static/"):
                return self._static(path[len("/static/"):], head)
            if path == "/api/state":
                return self._json(HTTPStatus.OK, self.app.state(), head)
            m = re.fullmatch(r"/media/([A-Za-z0-9_-]+)\.mp4", path)
            if m:
                return self._media(m.group(1), head)
            m = re.fullmatch(r"/thumb/([A-Za-z0-9_-]+)/(\d+)\.jpg", path)
            if m:
                return self._thumb(m.group(1), int(m.group(2)), head)
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"}, head)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self):
        path = urlparse(self.path).path
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if path != "/api/decision":
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})
        try:
            req = json.loads(body or b"{}")
            seg, decision = req["segment_id"], req.get("decision")
        except (ValueError, KeyError, TypeError):
            return self._json(HTTPStatus.BAD_REQUEST, {"error": 'expected JSON {"segment_id": ..., "decision": ...}'})
        status, payload = self.app.decide(str(seg), decision)
        self._json(status, payload)

    # ----------------------------------------------------------------------------------- responses

    def _send(self, status: int, body: bytes, ctype: str, head: bool = False, extra: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, payload: dict, head: bool = False):
        self._send(status, json.dumps(payload).encode(), "application/json", head, {"Cache-Control": "no-store"})

    def _static(self, name: str, head: bool):
        p = (STATIC / name).resolve()
        if STATIC.resolve() not in p.parents or not p.is_file():
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such file: {name}"}, head)
        self._send(HTTPStatus.OK, p.read_bytes(), CONTENT_TYPES.get(p.suffix, "application/octet-stream"), head,
                   {"Cache-Control": "no-store"})

    def _thumb(self, segment_id: str, i: int, head: bool):
        try:
            data = self.app.thumbs.get(segment_id, i)
        except (KeyError, IndexError):
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no thumbnail {i} of {segment_id}"}, head)
        except Exception as e:  # an undecodable mp4: say so, keep serving
            log.warning("thumbnail of %s failed: %s", segment_id, e)
            return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"thumbnail of {segment_id} failed: {e}"}, head)
        self._send(HTTPStatus.OK, data, "image/jpeg", head, {"Cache-Control": "max-age=3600"})

    def _media(self, segment_id: str, head: bool):
        member = self.app.index.member(segment_id, "mp4")
        if member is None:
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no media for segment {segment_id}"}, head)
        size = member.size
        rng = self.headers.get("Range")
        if not rng:
            self.app.media_requests["full"] += 1
            body = b"" if head else self.app.index.read(segment_id, "mp4")
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        span = parse_range(rng, size)
        if span is None:
            self.app.media_requests["unsatisfiable"] += 1
            return self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", "video/mp4", head,
                              {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
        a, b = span
        self.app.media_requests["range"] += 1
        body = self.app.index.read(segment_id, "mp4", a, b - a + 1)
        self._send(HTTPStatus.PARTIAL_CONTENT, body, "video/mp4", head,
                   {"Content-Range": f"bytes {a}-{b}/{size}", "Accept-Ranges": "bytes"})


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=a-b` / `bytes=a-` / `bytes=-n` range as inclusive (first, last); None if unsatisfiable
    or malformed (several ranges are not supported: browsers ask for one)."""
    m = RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)) or size <= 0:
        return None
    if not m.group(1):  # suffix: the last n bytes
        n = int(m.group(2))
        return (max(0, size - n), size - 1) if n > 0 else None
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) else size - 1
    if a >= size or b < a:
        return None
    return a, min(b, size - 1)


def make_server(cfg: ReviewConfig) -> ThreadingHTTPServer:
    """The server for a run (not yet serving: call `serve_forever`); its actual port is `server_address[1]`."""
    app = ReviewApp(cfg)
    handler = type("ReviewHandler", (Handler,), {"app": app})
    try:
        server = ThreadingHTTPServer((cfg.host, cfg.port), handler)
    except OSError as e:
        raise UsageError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e} (choose another --port)") from None
    server.daemon_threads = True
    server.app = app  # type: ignore[attr-defined]
    return server
