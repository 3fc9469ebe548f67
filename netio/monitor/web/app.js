// gearshard dashboard: polls api/stats every second and redraws. Plain DOM,
// no dependencies, so the binary serves it as is and it works offline.
// Every figure comes from the server; names are set with textContent only
// (function names are arbitrary client bytes).
"use strict";

const INTERVAL_MS = 1000;
const TIMEOUT_MS = 3000;
const HISTORY = 60; // sparkline points, one per poll

const $ = (id) => document.getElementById(id);
const intFmt = new Intl.NumberFormat("en-US");
const rateFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const pctFmt = new Intl.NumberFormat("en-US", { style: "percent", maximumFractionDigits: 1 });

let prev = null; // last sample: {uptime, finished, shards: [finished...]}
let history = []; // jobs/s per poll, oldest first
let lastOK = null; // Date of the last good poll
let polls = 0;

function fmtInt(n) {
  return intFmt.format(n);
}

function fmtRate(r) {
  return r >= 100 ? intFmt.format(Math.round(r)) : rateFmt.format(r);
}

// Mean durations come in seconds; 0 means no job measured yet.
function fmtDuration(s) {
  if (!(s > 0)) return "—";
  if (s < 1e-3) return Math.round(s * 1e6) + " µs";
  if (s < 1) return (s * 1e3).toPrecision(3) + " ms";
  if (s < 120) return s.toPrecision(3) + " s";
  return (s / 60).toFixed(1) + " min";
}

function fmtUptime(sec) {
  sec = Math.floor(sec);
  const d = Math.floor(sec / 86400), h = Math.floor(sec / 3600) % 24;
  const m = Math.floor(sec / 60) % 60, s = sec % 60;
  const p2 = (n) => String(n).padStart(2, "0");
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${p2(m)}m`;
  if (m > 0) return `${m}m ${p2(s)}s`;
  return `${s}s`;
}

function cell(field, text, cls) {
  const td = document.createElement("td");
  td.dataset.field = field;
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

// rates turns two samples into jobs/s, over the server's own clock between
// the two snapshots (not the browser's, which also counts network delay).
function rates(st) {
  // Shard counters, not the functions': they never go back (a dropped
  // function takes its own counters with it).
  const shards = st.shards.map((s) => s.finished);
  const finished = shards.reduce((sum, n) => sum + n, 0);
  const cur = { uptime: st.uptime_seconds, finished, shards };
  let total = null;
  let perShard = shards.map(() => null);
  if (prev) {
    const dt = cur.uptime - prev.uptime;
    if (dt <= 0 || finished < prev.finished || shards.length !== prev.shards.length) {
      history = []; // the server restarted: old figures say nothing now
    } else {
      total = (finished - prev.finished) / dt;
      perShard = shards.map((n, i) => Math.max(0, n - prev.shards[i]) / dt);
    }
  }
  prev = cur;
  if (total !== null) {
    history.push(total);
    if (history.length > HISTORY) history.shift();
  }
  return { total, perShard };
}

function drawSpark() {
  const w = 300, h = 56, pad = 3;
  const peak = Math.max(0, ...history);
  const step = w / (HISTORY - 1);
  const x0 = w - (history.length - 1) * step; // newest point at the right edge
  const pts = history.map((r, i) => {
    const y = h - pad - (peak > 0 ? (r / peak) * (h - 2 * pad) : 0);
    return `${(x0 + i * step).toFixed(1)},${y.toFixed(1)}`;
  });
  const line = pts.length > 1 ? "M" + pts.join(" L") : "";
  $("spark-line").setAttribute("d", line);
  $("spark-area").setAttribute("d", line ? `${line} L${w},${h} L${x0.toFixed(1)},${h} Z` : "");
  setText("spark-peak", history.length ? fmtRate(peak) : "—");
  setText("spark-span", String(history.length));
}

function functionRow(f) {
  const tr = document.createElement("tr");
  tr.dataset.function = f.name;
  const other = f.shard < 0;
  const starved = !other && f.total - f.running > 0 && f.workers === 0;
  if (other) tr.className = "other";
  const name = cell("name", f.name, "name");
  if (other) name.title = "functions past --metrics-max-functions, summed";
  tr.append(
    name,
    cell("shard", other ? "—" : String(f.shard)),
    cell("total", fmtInt(f.total)),
    cell("queued-high", fmtInt(f.queued.high), f.queued.high ? "" : "zero"),
    cell("queued-normal", fmtInt(f.queued.normal), f.queued.normal ? "" : "zero"),
    cell("queued-low", fmtInt(f.queued.low), f.queued.low ? "" : "zero"),
    cell("running", fmtInt(f.running), f.running ? "" : "zero"),
    cell("workers", fmtInt(f.workers), starved ? "warn" : f.workers ? "" : "zero"),
    cell("completed", fmtInt(f.completed)),
    cell("failed", fmtInt(f.failed), f.failed ? "bad" : "zero"),
    cell("exceptions", fmtInt(f.exceptions), f.exceptions ? "bad" : "zero"),
    cell("wait", fmtDuration(f.wait_avg_seconds)),
    cell("run", fmtDuration(f.run_avg_seconds)),
  );
  if (starved) tr.cells[7].title = "jobs are waiting and no worker can do this function";
  return tr;
}

function shardRow(s, finishedSum, rate) {
  const tr = document.createElement("tr");
  tr.dataset.shard = String(s.index);
  const share = finishedSum > 0 ? s.finished / finishedSum : 0;
  const bar = document.createElement("td");
  bar.dataset.field = "share";
  bar.className = "share";
  const track = document.createElement("div");
  track.className = "bar";
  const fill = document.createElement("div");
  fill.style.width = (share * 100).toFixed(1) + "%";
  track.append(fill);
  const pct = document.createElement("span");
  pct.textContent = finishedSum > 0 ? pctFmt.format(share) : "—";
  const wrap = document.createElement("div");
  wrap.className = "share-wrap";
  wrap.append(track, pct);
  bar.append(wrap);
  tr.append(
    cell("index", String(s.index), "name"),
    cell("functions", fmtInt(s.functions)),
    cell("queued", fmtInt(s.queued), s.queued ? "" : "zero"),
    cell("running", fmtInt(s.running), s.running ? "" : "zero"),
    cell("submitted", fmtInt(s.submitted)),
    cell("finished", fmtInt(s.finished)),
    cell("rate", rate === null ? "—" : fmtRate(rate)),
    bar,
  );
  return tr;
}

function render(st) {
  const { total, perShard } = rates(st);

  setText("version", st.version ? "v" + st.version : "");
  setText("uptime", fmtUptime(st.uptime_seconds));
  const c = st.connections;
  setText("conn-workers", fmtInt(c.workers));
  setText("conn-clients", fmtInt(c.clients));
  setText("conn-admins", fmtInt(c.admins));
  setText("conn-idle", fmtInt(c.idle));
  setText("conn-accepted", fmtInt(c.accepted));

  setText("rate", total === null ? "—" : fmtRate(total));
  document.title = total === null ? "gearshard" : `gearshard · ${fmtRate(total)} jobs/s`;
  drawSpark();

  // Plain code-unit order, like status; "_other_" (shard -1) stays last.
  const fns = st.functions.slice().sort((a, b) =>
    (a.shard < 0) - (b.shard < 0) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const q = { high: 0, normal: 0, low: 0 };
  let running = 0, busyFns = 0, starved = 0;
  for (const f of fns) {
    q.high += f.queued.high;
    q.normal += f.queued.normal;
    q.low += f.queued.low;
    running += f.running;
    if (f.running > 0) busyFns++;
    if (f.shard >= 0 && f.total - f.running > 0 && f.workers === 0) starved++;
  }
  setText("queued-total", fmtInt(q.high + q.normal + q.low));
  setText("queued-split", `high ${fmtInt(q.high)} · normal ${fmtInt(q.normal)} · low ${fmtInt(q.low)}`);
  setText("running-total", fmtInt(running));
  setText("running-note", `in ${fmtInt(busyFns)} function${busyFns === 1 ? "" : "s"}`);
  const note = $("starved-note");
  note.className = starved ? "small warn-text" : "small muted";
  setText("starved-note", starved ? `${fmtInt(starved)} queued with no worker` : "none waiting without a worker");
  setText("function-count", fmtInt(fns.length - (st.folded_functions > 0 ? 1 : 0) + st.folded_functions));
  $("functions").tBodies[0].replaceChildren(...fns.map(functionRow));
  $("no-functions").hidden = fns.length > 0;

  const folded = $("folded");
  folded.hidden = !(st.folded_functions > 0);
  folded.textContent = st.folded_functions > 0
    ? `${fmtInt(st.folded_functions)} more functions are summed in the _other_ row (--metrics-max-functions).`
    : "";

  const finishedSum = st.shards.reduce((sum, s) => sum + s.finished, 0);
  $("shards").tBodies[0].replaceChildren(...st.shards.map((s, i) => shardRow(s, finishedSum, perShard[i])));
}

function setOK() {
  lastOK = new Date();
  document.body.dataset.state = "ok";
  $("error").hidden = true;
  setText("status", "live · " + lastOK.toLocaleTimeString("en-GB"));
}

// fail says loudly that the figures are stale instead of leaving them up
// as if they were current.
function setError(err) {
  document.body.dataset.state = "error";
  const since = lastOK ? ` Figures below are from ${lastOK.toLocaleTimeString("en-GB")} and are not updating.` : "";
  $("error").textContent = `Cannot read api/stats: ${err.message || err}.${since} Retrying every second.`;
  $("error").hidden = false;
  setText("status", "offline");
  setText("rate", "—");
  prev = null; // the next good poll starts a new rate
}

async function poll() {
  const res = await fetch("api/stats", { cache: "no-store", signal: AbortSignal.timeout(TIMEOUT_MS) });
  if (!res.ok) throw new Error(`HTTP ${res.status} ${res.statusText}`.trim());
  return res.json();
}

async function tick() {
  const start = performance.now();
  try {
    const st = await poll();
    render(st);
    setOK();
  } catch (err) {
    setError(err);
  }
  document.body.dataset.polls = String(++polls);
  setTimeout(tick, Math.max(0, INTERVAL_MS - (performance.now() - start)));
}

tick();
