// The review page: per class, one segment at a time (video with sound, thumbnails, scores), accept/reject by
// click or key. Every decision is POSTed at once; the server writes it to review.parquet.
"use strict";

const S = { state: null, byClass: {}, cls: null, idx: 0, errors: 0, saved: 0, busy: false };
const $ = (id) => document.getElementById(id);

function esc(t) {
  return String(t ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function fail(msg) {
  S.errors += 1;
  document.body.dataset.errors = String(S.errors);
  const e = $("error");
  e.textContent = msg;
  e.hidden = false;
}

function segs() { return S.byClass[S.cls] || []; }
function current() { return segs()[S.idx]; }

async function load() {
  const r = await fetch("/api/state", { cache: "no-store" });
  if (!r.ok) { fail("could not load the review state: HTTP " + r.status); return; }
  S.state = await r.json();
  S.byClass = {};
  for (const c of S.state.classes) S.byClass[c.name] = [];
  for (const s of S.state.segments) S.byClass[s.class].push(s);
  $("who").textContent = "reviewer: " + S.state.reviewer;
  $("run").textContent = S.state.run;
  if (S.state.random_weight_columns.length) {
    const b = $("random-weights");
    b.textContent = "Scores " + S.state.random_weight_columns.join(", ") +
      " came from RANDOM-INIT models: not meaningful; judge by eye and ear.";
    b.hidden = false;
  }
  if (S.state.missing_classes.length) {
    $("missing").textContent = "No kept segments of: " + S.state.missing_classes.join(", ");
    $("missing").hidden = false;
  }
  // start at the first class with undecided segments, on its first undecided segment
  const names = S.state.classes.map((c) => c.name);
  S.cls = names.find((n) => S.byClass[n].some((s) => !s.decision)) || names[0];
  S.idx = Math.max(0, segs().findIndex((s) => !s.decision));
  render();
  document.body.dataset.ready = "1";
}

function progress(name) {
  const list = S.byClass[name];
  const acc = list.filter((s) => s.decision === "accept").length;
  const rej = list.filter((s) => s.decision === "reject").length;
  return { total: list.length, acc, rej, done: acc + rej };
}

function renderClasses() {
  const ul = $("classes");
  ul.innerHTML = "";
  for (const c of S.state.classes) {
    const p = progress(c.name);
    const li = document.createElement("li");
    li.dataset.class = c.name;
    li.className = (c.name === S.cls ? "current " : "") + (p.done === p.total ? "done" : "");
    li.innerHTML = `<span class="name">${esc(c.name)}</span> <span class="prog">${p.done}/${p.total}</span>` +
      `<progress max="${p.total}" value="${p.done}"></progress>` +
      `<small>${p.acc} accepted, ${p.rej} rejected</small>`;
    li.addEventListener("click", () => selectClass(c.name));
    ul.appendChild(li);
  }
}

function renderSegment() {
  const seg = current();
  document.body.dataset.current = seg ? seg.segment_id : "";
  $("class-name").textContent = S.cls;
  $("position").textContent = seg ? `segment ${S.idx + 1} of ${segs().length}` : "no segments";
  if (!seg) return;
  const player = $("player");
  const src = "/media/" + encodeURIComponent(seg.segment_id) + ".mp4";
  if (player.dataset.segment !== seg.segment_id) {
    player.dataset.segment = seg.segment_id;
    if (seg.media) {
      player.src = src;
      player.play().catch(() => {}); // autoplay with sound needs a user gesture first; then it plays
    } else {
      player.removeAttribute("src");
      player.load();
    }
    const th = $("thumbs");
    th.innerHTML = "";
    if (seg.media) {
      for (let i = 0; i < S.state.thumbnails; i++) {
        const img = document.createElement("img");
        img.className = "thumb";
        img.alt = `frame ${i + 1} of ${seg.segment_id}`;
        img.src = `/thumb/${encodeURIComponent(seg.segment_id)}/${i}.jpg`;
        th.appendChild(img);
      }
    }
  }
  const badge = $("decision");
  badge.className = "badge " + (seg.decision || "");
  badge.textContent = seg.decision ? `${seg.decision}ed by ${seg.reviewer}` : "undecided";
  const random = new Set(S.state.random_weight_columns);
  const rows = [
    ["segment", seg.segment_id], ["video", seg.video_id], ["source", seg.source],
    ["time", `${seg.start.toFixed(2)} - ${seg.end.toFixed(2)} s (${seg.duration.toFixed(2)} s)`],
    ["label", seg.label],
  ];
  for (const [k, v] of Object.entries(seg.scores)) {
    rows.push([k, (v === null ? "-" : v.toFixed(3)) + (random.has(k) ? ' <span class="random">(random weights)</span>' : "")]);
  }
  if (seg.time) rows.push(["decided", `${seg.time} by ${seg.reviewer}`]);
  if (!seg.media) rows.push(["media", "not in the shards"]);
  $("info").innerHTML = rows.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${k in seg.scores ? v : esc(v)}</td></tr>`).join("");
}

function renderStrip() {
  const strip = $("strip");
  strip.innerHTML = "";
  segs().forEach((s, i) => {
    const b = document.createElement("button");
    b.className = "chip " + (s.decision || "") + (i === S.idx ? " current" : "");
    b.textContent = String(i + 1);
    b.title = s.segment_id + (s.decision ? " (" + s.decision + ")" : "");
    b.dataset.segment = s.segment_id;
    b.addEventListener("click", () => { S.idx = i; render(); });
    strip.appendChild(b);
  });
}

function render() { renderClasses(); renderSegment(); renderStrip(); }

function selectClass(name) {
  S.cls = name;
  S.idx = Math.max(0, segs().findIndex((s) => !s.decision));
  render();
}

function move(step) {
  const n = segs().length;
  if (!n) return;
  S.idx = Math.min(n - 1, Math.max(0, S.idx + step));
  render();
}

function nextUndecided() {
  const list = segs();
  for (let k = 1; k <= list.length; k++) {
    const i = (S.idx + k) % list.length;
    if (!list[i].decision) { S.idx = i; render(); return; }
  }
}

function moveClass(step) {
  const names = S.state.classes.map((c) => c.name);
  const i = names.indexOf(S.cls);
  selectClass(names[Math.min(names.length - 1, Math.max(0, i + step))]);
}

async function decide(decision) {
  const seg = current();
  if (!seg || S.busy) return;
  S.busy = true;
  try {
    const r = await fetch("/api/decision", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ segment_id: seg.segment_id, decision }),
    });
    const j = await r.json();
    if (!r.ok) { fail("not saved: " + (j.error || r.status)); return; }
    seg.decision = j.decision; seg.reviewer = j.reviewer; seg.time = j.time;
    S.saved += 1;
    document.body.dataset.saved = String(S.saved);
    $("error").hidden = true;
    if (decision && S.idx < segs().length - 1) S.idx += 1; // a decision moves on to the next segment
    render();
  } catch (e) {
    fail("not saved: " + e);
  } finally {
    S.busy = false;
  }
}

function togglePlay() {
  const p = $("player");
  if (p.paused) p.play().catch(() => {}); else p.pause();
}

const KEYS = {
  a: () => decide("accept"), r: () => decide("reject"), u: () => decide(null), Backspace: () => decide(null),
  j: () => move(1), ArrowRight: () => move(1), ArrowDown: () => move(1),
  k: () => move(-1), ArrowLeft: () => move(-1), ArrowUp: () => move(-1),
  n: nextUndecided, " ": togglePlay, "]": () => moveClass(1), "[": () => moveClass(-1),
};

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || !S.state) return;
  const f = KEYS[e.key];
  if (!f) return;
  e.preventDefault(); // the video element's own arrow/space handling and button activation stay out
  f();
});

$("accept").addEventListener("click", () => decide("accept"));
$("reject").addEventListener("click", () => decide("reject"));
$("clear").addEventListener("click", () => decide(null));
$("prev").addEventListener("click", () => move(-1));
$("next").addEventListener("click", () => move(1));
$("player").addEventListener("error", () => {
  const seg = current();
  if (seg && seg.media) fail("this browser cannot play " + seg.segment_id + ".mp4");
});
window.addEventListener("error", (e) => fail("script error: " + e.message));
load().catch((e) => fail("could not load: " + e));
