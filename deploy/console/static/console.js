// The Tailrace console: polls /api/state and draws it. Data goes into the
// DOM with textContent only (never as HTML). With accounts on, every request
// is signed in the page (HMAC-SHA256 over "GET <path>\n<date>", as the
// gRPC clients sign calls); the secret key stays in this page's memory.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16", "#4a5568"];
const enc = new TextEncoder();
let account = null; // {ak, key: CryptoKey}
let refreshMs = 2000;
let timer = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function cell(row, text, cls) {
  row.appendChild(el("td", text, cls));
}

async function signedHeaders(path) {
  if (!account) return {};
  const date = String(Date.now());
  const sig = await crypto.subtle.sign("HMAC", account.key, enc.encode(`GET ${path}\n${date}`));
  const hex = Array.from(new Uint8Array(sig), (b) => b.toString(16).padStart(2, "0")).join("");
  return {
    "x-tailrace-date": date,
    "authorization": `TAILRACE-HMAC-SHA256 Credential=${account.ak}, SignedHeaders=x-tailrace-date, Signature=${hex}`,
  };
}

async function api(path) {
  const r = await fetch(path, { headers: await signedHeaders(path), cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error(body.error || `HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return body;
}

function showSignin(message) {
  document.body.dataset.state = "signin";
  document.getElementById("signin").hidden = false;
  document.getElementById("main").hidden = true;
  document.getElementById("signin-error").textContent = message || "";
  document.getElementById("live").textContent = "signed out";
}

async function signIn(ev) {
  ev.preventDefault();
  const ak = document.getElementById("ak").value.trim();
  const sk = document.getElementById("sk").value;
  const key = await crypto.subtle.importKey("raw", enc.encode(sk), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  document.getElementById("sk").value = "";
  account = { ak, key };
  document.getElementById("who").textContent = `signed in as ${ak}`;
  poll();
}

function brokerRow(tbody, group, b) {
  const tr = el("tr");
  tr.className = "broker";
  tr.dataset.group = group.broker_name;
  tr.dataset.brokerId = b.broker_id;
  tr.dataset.role = b.role;
  tr.dataset.alive = b.alive && !b.error ? "yes" : "no";
  cell(tr, b.broker_id, "num");
  cell(tr, b.role, `role-${b.role}`);
  cell(tr, b.address);
  cell(tr, b.epoch, "num");
  cell(tr, b.error ? "unreachable" : "up", b.error ? "no" : "yes");
  if (b.broker_id === 0) cell(tr, "—");
  else cell(tr, b.in_sync ? "in sync" : "out", b.in_sync ? "yes" : "no");
  cell(tr, b.lag_bytes === undefined || b.lag_bytes === null ? "" : b.lag_bytes, "num");
  cell(tr, b.max_offset, "num");
  if (b.error) tr.title = b.error;
  tbody.appendChild(tr);
}

function drawClusters(cluster) {
  const root = document.getElementById("clusters");
  root.replaceChildren();
  for (const c of cluster.clusters || []) {
    root.appendChild(el("h3", `cluster ${c.name}`));
    const grid = el("div", null, "groups");
    for (const g of c.groups) {
      const card = el("div", null, `group state-${g.state}`);
      card.dataset.group = g.broker_name;
      card.dataset.state = g.state;
      card.appendChild(el("h4", g.broker_name));
      if (g.state !== "ok") card.appendChild(el("div", g.state === "unreachable" ? "UNREACHABLE: no live broker answers" : g.state.replace("_", " "), "no"));
      const inSync = g.in_sync === null ? "unknown (no master answered)" : `[${g.in_sync.join(", ")}]`;
      let meta = `epoch ${g.epoch} · master ${g.master || "NONE"} · in-sync slaves ${inSync}`;
      if (g.controller) meta += ` · controller: ${g.controller.status || ""}`;
      card.appendChild(el("div", meta, g.master ? "meta" : "meta no"));
      const t = el("table");
      const head = el("tr");
      for (const h of ["id", "role", "address", "epoch", "state", "in sync", "lag bytes", "log end"]) head.appendChild(el("th", h));
      t.appendChild(el("thead")).appendChild(head);
      const tb = t.appendChild(el("tbody"));
      for (const b of g.brokers) brokerRow(tb, g, b);
      card.appendChild(t);
      grid.appendChild(card);
    }
    root.appendChild(grid);
  }
  if (!(cluster.clusters || []).length) root.appendChild(el("p", "no broker registered", "empty"));
}

function drawGroups(groups) {
  const missing = Object.entries(groups.unreachable || {}).map(([k, v]) => `${k}: ${v}`);
  const note = document.getElementById("groups-unreachable");
  note.textContent = missing.length ? `incomplete (lag below leaves these out): ${missing.join("; ")}` : "";
  note.dataset.count = missing.length;
  const gb = document.querySelector("#groups tbody");
  gb.replaceChildren();
  for (const g of groups.groups || []) {
    const tr = el("tr");
    tr.className = "group-row";
    tr.dataset.group = g.group;
    tr.dataset.lag = g.lag;
    cell(tr, g.group);
    cell(tr, g.topics.join(", "));
    cell(tr, g.queues, "num");
    cell(tr, g.lag, "num");
    cell(tr, g.lag_bytes, "num");
    cell(tr, g.members.length ? g.members.join(", ") : "none");
    gb.appendChild(tr);
  }
  const qb = document.querySelector("#queues tbody");
  qb.replaceChildren();
  for (const q of groups.queues || []) {
    const tr = el("tr");
    tr.className = "queue";
    Object.assign(tr.dataset, {
      group: q.group, topic: q.topic, broker: q.broker_name, queue: q.queue_id, lag: q.lag,
      readFrom: q.read_from, readBroker: q.read_broker_id, reason: q.reason,
    });
    cell(tr, q.group);
    cell(tr, q.topic);
    cell(tr, q.broker_name);
    cell(tr, q.queue_id, "num");
    cell(tr, q.max_offset, "num");
    const fromSlave = q.offsets_from !== undefined && q.offsets_from !== 0;
    cell(tr, (q.committed_offset === null ? "none" : q.committed_offset) + (fromSlave ? ` (slave ${q.offsets_from})` : ""), "num");
    cell(tr, q.lag, "num");
    cell(tr, q.lag_bytes_estimated ? `~${q.lag_bytes}` : q.lag_bytes, "num");
    cell(tr, q.member || "");
    const from = q.read_from ? `${q.read_from} (broker ${q.read_broker_id})` : "—";
    cell(tr, from, q.read_from === "slave" ? "slave" : "");
    cell(tr, q.reason ? `${q.reason}: ${q.why}` : q.why, "why");
    qb.appendChild(tr);
  }
  if (!(groups.queues || []).length) {
    const tr = el("tr");
    tr.appendChild(el("td", "no consumer group yet", "empty")).colSpan = 11;
    qb.appendChild(tr);
  }
}

function fmt(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1);
}

function drawChart(id, chart) {
  const root = document.getElementById(id);
  root.replaceChildren();
  const names = Object.keys(chart.series || {});
  root.dataset.series = names.join(",");
  const left = [];
  if (chart.not_sampled_count) left.push(`${chart.not_sampled_count} quieter topic(s) not sampled: ${chart.not_sampled.join(", ")}`);
  if ((chart.not_charted || []).length) left.push(`not charted (series cap): ${chart.not_charted.join(", ")}`);
  root.dataset.leftOut = chart.not_sampled_count || 0;
  if (!names.length) {
    root.appendChild(el("p", "waiting for samples…", "empty"));
    for (const t of left) root.appendChild(el("p", t, "note"));
    return;
  }
  const W = 600, H = 180, L = 44, B = 18;
  const now = Date.now();
  const span = Math.max(60000, ...names.flatMap((n) => chart.series[n].map((p) => now - p[0])));
  const max = Math.max(1, ...names.flatMap((n) => chart.series[n].map((p) => p[1])));
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const x = (t) => L + (W - L - 4) * (1 - (now - t) / span);
  const y = (v) => 4 + (H - B - 8) * (1 - v / max);
  for (const f of [0, 0.5, 1]) {
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("class", "axis");
    line.setAttribute("x1", L); line.setAttribute("x2", W - 4);
    line.setAttribute("y1", y(max * f)); line.setAttribute("y2", y(max * f));
    svg.appendChild(line);
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", 2); label.setAttribute("y", y(max * f) + 3);
    label.textContent = fmt(max * f);
    svg.appendChild(label);
  }
  const ago = document.createElementNS(SVG, "text");
  ago.setAttribute("x", L); ago.setAttribute("y", H - 4);
  ago.textContent = `${Math.round(span / 60000)} min ago`;
  svg.appendChild(ago);
  const legend = el("div", null, "legend");
  names.forEach((n, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = chart.series[n];
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", color);
    line.setAttribute("stroke-width", "2");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    line.setAttribute("points", pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
    svg.appendChild(line);
    for (const p of pts.slice(-1)) { // the newest point, visible even alone
      const dot = document.createElementNS(SVG, "circle");
      dot.setAttribute("cx", x(p[0]).toFixed(1));
      dot.setAttribute("cy", y(p[1]).toFixed(1));
      dot.setAttribute("r", "3");
      dot.setAttribute("fill", color);
      svg.appendChild(dot);
    }
    const last = pts.length ? pts[pts.length - 1][1] : 0;
    const item = el("span", `${n}: ${fmt(last)}`);
    item.style.setProperty("--c", color);
    legend.appendChild(item);
  });
  root.appendChild(svg);
  root.appendChild(legend);
  for (const t of left) root.appendChild(el("p", t, "note"));
}

async function poll() {
  clearTimeout(timer);
  const live = document.getElementById("live");
  try {
    const s = await api("/api/state");
    document.getElementById("signin").hidden = true;
    document.getElementById("main").hidden = false;
    refreshMs = (s.charts && s.charts.refresh_ms) || refreshMs;
    drawClusters(s.cluster || {});
    drawGroups(s.groups || {});
    drawChart("chart-rates", s.charts.rates);
    drawChart("chart-lag", s.charts.lag);
    const errs = Object.entries(s.errors || {}).map(([k, v]) => `${k}: ${v}`);
    document.getElementById("errors").textContent = errs.join("\n");
    live.textContent = `live · updated ${new Date(s.updated_ms).toLocaleTimeString()}`;
    live.classList.remove("stale");
    document.body.dataset.updated = s.updated_ms;
    document.body.dataset.state = "ok";
  } catch (e) {
    if (e.status === 401 || e.status === 403) {
      account = null;
      showSignin(document.body.dataset.state === "loading" ? "" : e.message);
      return;
    }
    live.textContent = `stale: ${e.message}`;
    live.classList.add("stale");
    document.body.dataset.state = "error";
  }
  timer = setTimeout(poll, refreshMs);
}

document.getElementById("signin").addEventListener("submit", (ev) => {
  signIn(ev).catch((e) => showSignin(e.message));
});
poll();
