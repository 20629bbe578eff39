"""The review server on a small run of real shard media: byte ranges, thumbnails, decisions (atomic, kept
across a restart, two reviewers at once), the CLI's errors, and the page driven in headless Chromium with
real mouse clicks and key presses (Chrome DevTools protocol over a pipe, no extra dependency)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.review.server import parse_range
from curate.review.store import DecisionStore
from pipelines.review import main
from tests.curate.review_run import Served, make_run

VIDEOS = {"dog barking": {"dogA": 2, "dogB": 1}, "hammering": {"hamA": 2}}


@pytest.fixture(scope="module")
def run_template(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("review") / "run"
    make_run(out, VIDEOS, stats={"random_weight_columns": ["clip_diff"]})
    return out


@pytest.fixture
def run(run_template, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run_template, out)
    return out


def decisions(out: Path) -> dict[str, dict]:
    return {r["segment_id"]: r for r in pq.read_table(out / "review.parquet").to_pylist()}


# --------------------------------------------------------------------------------------- HTTP


def test_parse_range():
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=95-200", 100) == (95, 99)
    for bad in ("bytes=100-", "bytes=5-2", "bytes=-0", "bytes=-", "items=0-1", "bytes=0-1,5-6"):
        assert parse_range(bad, 100) is None, bad


def test_media_ranges_thumbnails_and_static(run):
    import av
    from PIL import Image

    (run / "shards" / "train-000099.tar").write_bytes(b"not a tar" * 100)  # skipped with a warning
    s = Served(run)
    assert s.app.index.unreadable == [str(run / "shards" / "train-000099.tar")]
    try:
        st = s.state()
        assert [c["name"] for c in st["classes"]] == ["dog barking", "hammering"]
        assert [c["total"] for c in st["classes"]] == [3, 2]  # non-kept segments are not under review
        assert st["random_weight_columns"] == ["clip_diff"]
        seg = st["segments"][0]["segment_id"]
        m = s.app.index.member(seg, "mp4")
        whole = m.tar.read_bytes()[m.offset : m.offset + m.size]
        status, headers, body = s.get(f"/media/{seg}.mp4")
        assert status == 200 and body == whole and headers["Accept-Ranges"] == "bytes"
        assert headers["Content-Type"] == "video/mp4"
        with av.open(io.BytesIO(body)) as c:  # a playable h264 + aac file
            assert c.streams.video[0].codec_context.name == "h264" and c.streams.audio[0].codec_context.name == "aac"
        status, headers, body = s.get(f"/media/{seg}.mp4", {"Range": "bytes=100-199"})
        assert status == 206 and body == whole[100:200] and headers["Content-Range"] == f"bytes 100-199/{m.size}"
        assert s.get(f"/media/{seg}.mp4", {"Range": "bytes=-50"})[2] == whole[-50:]
        assert s.get(f"/media/{seg}.mp4", {"Range": "bytes=500-"})[2] == whole[500:]
        status, headers, _ = s.get(f"/media/{seg}.mp4", {"Range": f"bytes={m.size}-"})
        assert status == 416 and headers["Content-Range"] == f"bytes */{m.size}"
        status, headers, body = s.get(f"/media/{seg}.mp4", method="HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) == m.size
        assert s.get("/media/nope.mp4")[0] == 404

        imgs = []
        for i in range(3):
            status, headers, body = s.get(f"/thumb/{seg}/{i}.jpg")
            assert status == 200 and headers["Content-Type"] == "image/jpeg"
            imgs.append(Image.open(io.BytesIO(body)).convert("RGB"))
        assert imgs[0].size == (64, 48)
        import numpy as np

        a, b, c = (np.asarray(im, np.float32) for im in imgs)
        assert np.abs(a - b).mean() > 1.0 and np.abs(b - c).mean() > 1.0  # first / middle / last frames differ
        assert sorted(p.name for p in (run / "review_cache" / "thumbs").iterdir()) == [f"{seg}-{i}.jpg" for i in range(3)]
        assert s.get(f"/thumb/{seg}/3.jpg")[0] == 404 and s.get("/thumb/nope/0.jpg")[0] == 404

        status, headers, body = s.get("/")
        assert status == 200 and b"review.js" in body
        assert s.get("/static/review.js")[0] == 200
        assert s.get("/static/../server.py")[0] == 404 and s.get("/static/%2e%2e/store.py")[0] == 404
    finally:
        s.close()


# ---------------------------------------------------------------------------------- decisions


def test_decisions_saved_atomically_and_survive_restart(run):
    s = Served(run, reviewer="alice")
    try:
        segs = [x["segment_id"] for x in s.state()["segments"]]
        assert s.decide(segs[0], "accept")[0] == 200
        assert s.decide(segs[1], "reject")[0] == 200
        assert s.decide(segs[2], "accept")[0] == 200
        assert s.decide(segs[2], None) == (200, {"segment_id": segs[2], "decision": None, "reviewer": None, "time": None})
        status, err = s.decide(segs[0], "maybe")
        assert status == 400 and "accept, reject or null" in err["error"]
        assert s.decide("not-a-segment", "accept")[0] == 403
    finally:
        s.close()
    d = decisions(run)
    assert set(d) == {segs[0], segs[1]}
    assert d[segs[0]]["decision"] == "accept" and d[segs[1]]["decision"] == "reject"
    assert d[segs[0]]["reviewer"] == "alice" and d[segs[0]]["label"] == "dog barking"
    assert d[segs[0]]["time"].endswith("Z") and d[segs[0]]["time"] <= d[segs[1]]["time"]
    assert not [p for p in run.iterdir() if ".tmp" in p.name]  # temp files renamed away

    s2 = Served(run, reviewer="alice")  # a restart shows what was decided
    try:
        st = s2.state()
        by = {x["segment_id"]: x for x in st["segments"]}
        assert by[segs[0]]["decision"] == "accept" and by[segs[1]]["decision"] == "reject"
        assert by[segs[2]]["decision"] is None
        assert st["classes"][0] == {"name": "dog barking", "total": 3, "accept": 1, "reject": 1}
    finally:
        s2.close()


def test_writer_holds_the_lock(run):
    """A write waits while another process holds the lock (so read-modify-write never interleaves)."""
    store = DecisionStore(run)
    done = threading.Event()
    with open(run / ".review.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        t = threading.Thread(target=lambda: (store.set("x", "accept", "bob"), done.set()))
        t.start()
        assert not done.wait(0.3)
        fcntl.flock(f, fcntl.LOCK_UN)
    assert done.wait(10)
    t.join()
    assert decisions(run)["x"]["reviewer"] == "bob"


def test_two_reviewers_on_disjoint_classes(run):
    a = Served(run, reviewer="alice", classes="dog barking")
    b = Served(run, reviewer="bob", classes="Hammering")  # lenient class matching
    try:
        dogs = [x["segment_id"] for x in a.state()["segments"]]
        hams = [x["segment_id"] for x in b.state()["segments"]]
        assert len(dogs) == 3 and len(hams) == 2 and not set(dogs) & set(hams)
        assert a.decide(hams[0], "accept")[0] == 403  # outside alice's classes
        results = []

        def work(server, ids, decision, rounds=4):
            for _ in range(rounds):  # repeated, interleaved writes from two servers
                for i in ids:
                    results.append(server.decide(i, decision)[0])

        ts = [threading.Thread(target=work, args=(a, dogs, "accept")), threading.Thread(target=work, args=(b, hams, "reject"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert results and set(results) == {200}
    finally:
        a.close()
        b.close()
    d = decisions(run)
    assert {k: (v["decision"], v["reviewer"]) for k, v in d.items()} == {
        **{k: ("accept", "alice") for k in dogs}, **{k: ("reject", "bob") for k in hams}}


# ------------------------------------------------------------------------------------------ CLI


def test_cli_help_and_errors(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--reviewer" in capsys.readouterr().out
    assert main(["--help-config"]) == 0 and "thumb_size" in capsys.readouterr().out
    cases = [
        (["--out", str(tmp_path / "missing"), "--reviewer", "a"], "does not exist"),
        (["--reviewer", "a"], "--out is required"),
        (["--out", str(tmp_path), "--reviewer", "a"], "no segments.parquet"),
        (["--out", str(run)], "--reviewer NAME is required"),
        (["--out", str(run), "--reviewer", "a", "--classes", "avsync15x"], "no kept segment of these classes"),
        (["--out", str(run), "--reviewer", "a", "prot=1"], "unknown setting 'prot'"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and msg in err[0], (argv, err)
    (run / "shards").rename(run / "elsewhere")
    assert main(["--out", str(run), "--reviewer", "a"]) == 2
    assert "was the run score_only" in capsys.readouterr().err


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_serves_until_interrupted(run, stop):
    """The entry point as a user runs it: prints the address, serves, saves, stops cleanly on Ctrl-C (SIGINT)
    or SIGTERM, even when started with SIGINT ignored (as a shell starts a background command)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.Popen([sys.executable, "-m", "pipelines.review", "--out", str(run), "--reviewer", "erin", "--port", "0",
                          "--classes", "hammering"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        lines = []
        for line in p.stdout:
            lines.append(line)
            if line.startswith("open "):
                break
        assert lines and lines[-1].startswith("open http://127.0.0.1:"), (lines, p.stderr.read() if p.poll() is not None else "")
        assert lines[0].startswith("reviewing 2 segments of 1 classes")
        base = lines[-1].split()[1].rstrip("/")
        st = json.loads(urllib.request.urlopen(base + "/api/state", timeout=30).read())
        seg = st["segments"][0]["segment_id"]
        req = urllib.request.Request(base + "/api/decision", method="POST",
                                     data=json.dumps({"segment_id": seg, "decision": "reject"}).encode())
        assert json.loads(urllib.request.urlopen(req, timeout=30).read())["reviewer"] == "erin"
    finally:
        p.send_signal(stop)
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            pytest.fail(f"the review server did not stop on {stop.name}: {err}")
    assert p.returncode == 0, err
    assert out.strip().splitlines()[-1] == f"decisions saved in {run / 'review.parquet'}"
    assert decisions(run)[seg]["decision"] == "reject"


def test_cli_port_in_use(run, capsys):
    s = Served(run)
    try:
        port = s.server.server_address[1]
        assert main(["--out", str(run), "--reviewer", "a", "--port", str(port)]) == 2
        assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err
    finally:
        s.close()


# ------------------------------------------------------------------------------------ browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--mute-audio", "--window-size=1280,1000"]


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3/4, as Puppeteer's pipe mode)."""

    def __init__(self, profile: Path):
        exe = shutil.which("/usr/bin/chromium") or shutil.which("chromium")
        assert exe, "Chromium is required for this test: apt-get update && apt-get install -y chromium (as root)"
        to_r, self._to_w = os.pipe()  # we write commands, Chromium reads on fd 3
        self._from_r, from_w = os.pipe()  # Chromium writes on fd 4

        def child_fds():
            a = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.log = profile.parent / "chromium.log"  # a file, not a pipe: a chatty browser never blocks on it
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                                          "about:blank"], preexec_fn=child_fds, pass_fds=(3, 4),
                                         stdout=subprocess.DEVNULL, stderr=log)
        os.close(to_r)
        os.close(from_w)
        self._id = 0
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._reader, daemon=True).start()
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def _reader(self):
        buf = b""
        while True:
            chunk = os.read(self._from_r, 1 << 16)
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                obj = json.loads(msg)
                with self._cv:
                    if "id" in obj:
                        self._replies[obj["id"]] = obj
                    else:
                        self.events.append(obj)
                    self._cv.notify_all()

    def call(self, method: str, session: bool = False, timeout: float = 30, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        with self._cv:
            ok = self._cv.wait_for(lambda: self._id in self._replies or self.proc.poll() is not None, timeout)
            reply = self._replies.pop(self._id, None)
        assert ok and reply is not None, f"no reply to {method}; chromium: {self._stderr()}"
        assert "error" not in reply, (method, reply["error"])
        return reply["result"]

    def _stderr(self) -> str:
        return ("(running) " if self.proc.poll() is None else "") + self.log.read_text(errors="replace")[-2000:]

    def eval(self, expr: str, quiet: bool = False):
        r = self.call("Runtime.evaluate", session=True, expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            assert quiet, (expr, r["result"].get("description"))
            return None
        return r["result"].get("value")

    def wait(self, expr: str, timeout: float = 20):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            v = self.eval(expr, quiet=True)  # the page may still be loading
            if v:
                return v
            time.sleep(0.05)
        shown = self.eval("document.getElementById('error').textContent", quiet=True)
        raise AssertionError(f"timed out waiting for {expr}; page errors: {shown}")

    def navigate(self, url: str):
        self.call("Page.navigate", session=True, url=url)

    def click(self, selector: str):
        """A real left click (mouse moved, pressed, released) at the element's centre."""
        # the centre of the element, once the element is what a click there hits (the layout has settled)
        x, y = self.wait(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
                         " const r = e.getBoundingClientRect(), x = r.x + r.width / 2, y = r.y + r.height / 2;"
                         " return e.contains(document.elementFromPoint(x, y)) ? [x, y] : null; })()", timeout=10)
        self.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)
        self.call("Input.dispatchMouseEvent", session=True, type="mousePressed", x=x, y=y, button="left", clickCount=1)
        self.call("Input.dispatchMouseEvent", session=True, type="mouseReleased", x=x, y=y, button="left", clickCount=1)

    KEYS = {"ArrowRight": (39, "ArrowRight", None), "ArrowLeft": (37, "ArrowLeft", None), " ": (32, "Space", " "),
            "]": (221, "BracketRight", "]"), "[": (219, "BracketLeft", "[")}

    def press(self, key: str):
        """A real key press (keyDown with its text, then keyUp)."""
        code, name, text = self.KEYS.get(key) or (ord(key.upper()), f"Key{key.upper()}", key)
        down = {"type": "keyDown", "key": key, "code": name, "windowsVirtualKeyCode": code}
        if text:
            down["text"] = text
        self.call("Input.dispatchKeyEvent", session=True, **down)
        self.call("Input.dispatchKeyEvent", session=True, type="keyUp", key=key, code=name, windowsVirtualKeyCode=code)

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except AssertionError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_w)


def test_review_page_in_headless_chromium(run, tmp_path):
    browser = Browser(tmp_path / "profile")
    try:
        segs = _drive_review_page(browser, run)
    finally:
        browser.close()
    assert {k: v["decision"] for k, v in decisions(run).items()} == {segs[0]: "accept", segs[1]: "accept"}


def _drive_review_page(browser: Browser, run: Path) -> list[str]:
    s = Served(run, reviewer="carol")
    try:
        segs = [x["segment_id"] for x in s.state()["segments"]]
        browser.navigate(s.base + "/")
        browser.wait("document.body.dataset.ready === '1'")
        assert browser.eval("document.querySelectorAll('#classes li').length") == 2
        assert browser.eval("document.querySelector('#classes li .prog').textContent") == "0/3"
        assert "RANDOM-INIT" in browser.eval("document.getElementById('random-weights').textContent")
        assert browser.eval("document.body.dataset.current") == segs[0]

        # the segment's video loads (h264 + aac from the shard, through the range-capable endpoint)
        browser.wait("document.getElementById('player').readyState >= 1")
        assert browser.eval("document.getElementById('player').videoWidth") == 64
        assert abs(browser.eval("document.getElementById('player').duration") - 2.0) < 0.2
        browser.wait("[...document.querySelectorAll('#thumbs img')].every(i => i.complete && i.naturalWidth === 64)")
        assert browser.eval("document.querySelectorAll('#thumbs img').length") == 3
        browser.eval("(() => { const p = document.getElementById('player'); p.dataset.seeked = '0';"
                     " p.addEventListener('seeked', () => p.dataset.seeked = '1', {once: true}); p.currentTime = 1.5; })()")
        browser.wait("document.getElementById('player').dataset.seeked === '1'")
        assert s.app.media_requests["range"] >= 1  # the browser streamed it with byte ranges

        browser.click("#accept")  # mouse: accept segment 1, the page moves on to segment 2
        browser.wait("document.body.dataset.saved === '1'")
        assert decisions(run)[segs[0]]["decision"] == "accept"
        assert decisions(run)[segs[0]]["reviewer"] == "carol"
        assert browser.eval("document.body.dataset.current") == segs[1]

        browser.press("r")  # keyboard: reject segment 2
        browser.wait("document.body.dataset.saved === '2'")
        assert decisions(run)[segs[1]]["decision"] == "reject"
        assert browser.eval("document.body.dataset.current") == segs[2]

        browser.press("k")  # back to segment 2, undo
        assert browser.eval("document.body.dataset.current") == segs[1]
        browser.press("u")
        browser.wait("document.body.dataset.saved === '3'")
        assert segs[1] not in decisions(run)
        browser.press("ArrowRight")
        assert browser.eval("document.body.dataset.current") == segs[2]
        browser.press("ArrowLeft")
        browser.press("j")
        assert browser.eval("document.body.dataset.current") == segs[2]

        browser.click(f"#strip .chip[data-segment='{segs[1]}']")  # jump by clicking the strip
        assert browser.eval("document.body.dataset.current") == segs[1]
        browser.press("a")
        browser.wait("document.body.dataset.saved === '4'")
        assert browser.eval("document.querySelector('#classes li .prog').textContent") == "2/3"

        browser.press("]")  # next class
        assert browser.eval("document.body.dataset.current") == segs[3]
        assert browser.eval("document.querySelector('#classes li.current .name').textContent") == "hammering"
        # after the first click / key press (the user gesture autoplay with sound needs) a segment plays on arrival
        player = "document.getElementById('player')"
        browser.wait(f"{player}.currentTime > 0.3 && !{player}.paused")
        browser.press(" ")  # space pauses ...
        browser.wait(f"{player}.paused")
        t = browser.eval(f"{player}.currentTime")
        browser.press(" ")  # ... and plays again
        browser.wait(f"!{player}.paused && {player}.currentTime > {t} + 0.2")
        browser.click("#classes li[data-class='dog barking']")
        assert browser.eval("document.body.dataset.current") == segs[2]  # the class's first undecided segment
        assert browser.eval("document.body.dataset.errors") == "0"
    finally:
        s.close()

    s2 = Served(run, reviewer="carol")  # restart: the page shows the saved decisions
    try:
        browser.navigate(s2.base + "/")
        browser.wait("document.body.dataset.ready === '1' && document.querySelectorAll('#strip .chip').length === 3")
        assert browser.eval("document.querySelector('#classes li .prog').textContent") == "2/3"
        assert browser.eval("[...document.querySelectorAll('#strip .chip')].map(c => c.className.split(' ')[1] || '')") \
            == ["accept", "accept", ""]
        assert browser.eval("document.body.dataset.current") == segs[2]
    finally:
        s2.close()
    return segs
