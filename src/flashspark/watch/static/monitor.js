// The monitor page: every snapshot from /events (server-sent) is drawn with textContent and
// DOM nodes only, never as HTML, because node names and errors come from the user's files.
"use strict";

const history = [];
const HISTORY = 120;

function text(id, value) { document.getElementById(id).textContent = value; }
function num(v, digits = 1) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }
function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %"; }
function secs(v) { return v === null || v === undefined ? "–" : (v < 1 ? (1000 * v).toFixed(0) + " ms" : v.toFixed(2) + " s"); }

function status(label, kind) {
  const el = document.getElementById("status");
  el.textContent = label;
  el.className = "pill " + kind;
}

function drawNodes(nodes) {
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren(...nodes.map((n) => {
    const row = document.createElement("tr");
    for (const value of [n.rank, n.node, n.engine, n.detail || "", n.last_log || ""]) {
      const cell = document.createElement("td");
      cell.textContent = String(value);
      row.appendChild(cell);
    }
    row.className = n.engine === "running" ? "" : "bad";
    return row;
  }));
}

function drawPositions(rates) {
  const box = document.getElementById("positions");
  box.replaceChildren(...rates.map((rate, i) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.height = Math.max(2, 80 * rate) + "px";
    const label = document.createElement("span");
    label.textContent = (100 * rate).toFixed(0) + "%";
    const pos = document.createElement("em");
    pos.textContent = "pos " + i;
    bar.append(label, pos);
    return bar;
  }));
  if (!rates.length) { box.textContent = "no drafts in the window"; }
}

function drawSpark() {
  const svg = document.getElementById("spark");
  const values = history.map((v) => v || 0);
  const top = Math.max(1, ...values);
  const step = 600 / Math.max(1, HISTORY - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(118 - 110 * v / top).toFixed(1)}`).join(" ");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points);
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#0969da");
  line.setAttribute("stroke-width", "2");
  const peak = document.createElementNS("http://www.w3.org/2000/svg", "text");
  peak.setAttribute("x", "596");
  peak.setAttribute("text-anchor", "end");
  peak.setAttribute("y", "14");
  peak.setAttribute("font-size", "12");
  peak.textContent = "max " + top.toFixed(1) + " tok/s";
  svg.replaceChildren(line, peak);
}

function draw(s) {
  const v = s.serving;
  text("deployment", s.deployment);
  text("base-url", s.base_url);
  text("updated", new Date(s.t * 1000).toLocaleTimeString());
  text("health", v.health + (s.error ? " — " + s.error : ""));
  text("requests", `${num(v.running, 0)} / ${num(v.waiting, 0)}`);
  text("kv", pct(v.kv_usage));
  text("prompt-tps", num(v.prompt_tps));
  text("generation-tps", num(v.generation_tps));
  text("preemptions", num(v.preemptions, 0));
  text("acceptance", pct(v.acceptance_rate));
  text("accepted-length", num(v.mean_acceptance_length, 2));
  text("ttft", `${secs(v.ttft_p50_s)} / ${secs(v.ttft_p95_s)} / ${secs(v.ttft_p99_s)}`);
  text("itl", `${secs(v.itl_p50_s)} / ${secs(v.itl_p99_s)}`);
  const c = s.canary;
  text("canary", c ? (c.ok ? "passing" : "failing: " + c.failing.join(", ")) + (c.alerts.length ? " — ALERT: " + c.alerts.join(", ") : "") : "not watched");
  drawNodes(s.nodes);
  drawPositions(v.per_position || []);
  history.push(v.generation_tps);
  if (history.length > HISTORY) { history.shift(); }
  drawSpark();
  const sick = v.health !== "ok" || s.nodes.some((n) => n.engine !== "running") || (c && c.alerts.length);
  status(sick ? "attention" : "healthy", sick ? "bad" : "ok");
  document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots || 0) + 1);
}

// ?snapshots=N freezes the page after N snapshots (a still for a report or a headless screenshot).
const stopAfter = Number(new URLSearchParams(location.search).get("snapshots") || 0);

function connect() {
  const source = new EventSource("/events");
  let seen = 0;
  source.addEventListener("snapshot", (e) => {
    draw(JSON.parse(e.data));
    seen += 1;
    if (stopAfter && seen >= stopAfter) { source.close(); }
  });
  source.onerror = () => status("disconnected — retrying", "stale");
}

connect();
