// dinfer host dashboard: renders /dashboard/state.json, then follows /dashboard/events (server-sent events).
// Plain DOM code, no dependencies. Every value from the node is set with textContent (never parsed as HTML).
// Optional query parameter: ?explorer=https://explorer.example/tx/ turns transaction hashes into links.
"use strict";

const explorer = new URLSearchParams(location.search).get("explorer");
const seenFeed = new Set();
let lastState = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function short(hex, keep = 6) {
  if (!hex) return "";
  return hex.length > 2 * keep + 2 ? `${hex.slice(0, keep + 2)}…${hex.slice(-keep)}` : hex;
}

function wei(value) {
  // Wei as a string (may exceed 2^53): show ETH with 6 decimals when large, raw wei otherwise.
  const n = BigInt(value || "0");
  if (n < 10n ** 12n) return `${n} wei`;
  const micro = n / 10n ** 12n;
  return `${micro / 1000000n}.${String(micro % 1000000n).padStart(6, "0")} ETH`;
}

function age(ts) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - ts));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  return `${Math.floor(s / 3600)}h`;
}

function setText(id, text) {
  const node = document.getElementById(id);
  if (node.textContent !== String(text)) node.textContent = String(text);
}

function fill(tbodyId, rows) {
  document.getElementById(tbodyId).replaceChildren(...rows);
}

function txCell(txs) {
  const cell = el("td");
  for (const [kind, hash] of Object.entries(txs || {})) {
    const label = `${kind} ${short(hash, 4)}`;
    const item = explorer ? el("a", { href: explorer + hash, title: hash, target: "_blank", rel: "noopener" }, label)
      : el("code", { title: hash, "data-tx": hash }, label);
    cell.append(item, " ");
  }
  return cell;
}

function renderChain(state) {
  const chain = state.chain || {};
  setText("epoch", chain.epoch ?? "–");
  setText("stage", chain.stage ?? "–");
  setText("height", chain.height ?? "–");
  const node = state.node || {};
  setText("address", node.address || "");
  setText("version", node.version ? `dinfer ${node.version} · chain ${node.chain_id}` : "");
  const earnings = state.earnings || {};
  setText("earnings", earnings.earnings_wei !== undefined ? wei(earnings.earnings_wei) : "–");
  setText("rewards", earnings.rewards_wei !== undefined ? wei(earnings.rewards_wei) : "–");
  setText("txqueue", state.tx_queue_depth ?? "–");
}

function renderParticipants(state) {
  const part = state.participants || { list: [], count: 0 };
  setText("participants-count", `${part.count} in epoch ${part.epoch ?? "–"}`);
  fill("participants", part.list.map((p) => el("tr", { class: p.self ? "self" : "", "data-address": p.address },
    el("td", {}, el("code", { title: p.address }, short(p.address)), p.self ? " (this host)" : ""),
    el("td", { class: `status-${p.status}` }, p.status),
    el("td", {}, p.weight),
    el("td", {}, p.models.join(", ")),
    el("td", {}, p.ml_nodes.map((n) => `${n.node_id}${n.poc_slot ? " (PoC slot)" : ""}`).join(", ")),
    el("td", {}, `${p.missed ?? "–"} / ${p.total ?? "–"}`),
    el("td", {}, p.invalid ?? "–"),
  )));
}

function renderMlnodes(state) {
  fill("mlnodes", (state.mlnodes || []).map((n) => el("tr", { "data-node": n.node_id },
    el("td", {}, n.node_id, n.enabled ? "" : " (disabled)"),
    el("td", { class: `status-${n.state}`, title: n.last_error || "" }, n.state),
    el("td", {}, (n.models || []).join(", ")),
    el("td", {}, n.in_flight ?? 0), el("td", {}, n.served ?? 0), el("td", {}, n.failures ?? 0),
  )));
  const stats = state.stats || { by_status: {} };
  const box = document.getElementById("stats");
  const items = [["records", stats.records ?? 0], ["tokens", stats.tokens ?? 0], ["fallbacks", stats.fallbacks ?? 0]];
  for (const [status, count] of Object.entries(stats.by_status || {})) items.push([status.toLowerCase(), count]);
  box.replaceChildren(...items.map(([k, v]) => el("div", { "data-stat": k }, el("span", { class: "muted" }, `${k} `), v)));
}

function renderFeed(state) {
  const rows = (state.inferences || []).map((r) => {
    const fresh = lastState !== null && !seenFeed.has(r.id);
    seenFeed.add(r.id);
    const attempts = (r.attempts || []).map((a) => `${short(a.executor, 3)} ${a.outcome}${a.ms ? ` ${a.ms}ms` : ""}`);
    return el("tr", { class: fresh ? "fresh" : "", "data-id": r.id },
      el("td", {}, el("a", { href: `/v1/inference/${r.id}`, title: r.id }, short(r.id))),
      el("td", {}, r.model), el("td", {}, r.role),
      el("td", {}, el("code", { title: r.executor }, short(r.executor))),
      el("td", { class: `status-${r.status}`, title: r.error || "" }, r.status),
      el("td", {}, `${r.prompt_tokens} + ${r.completion_tokens}`),
      el("td", {}, r.cost_wei),
      el("td", { title: attempts.join("\n") }, `${(r.attempts || []).length}`),
      txCell(r.txs),
      el("td", {}, age(r.created_at)),
    );
  });
  fill("feed", rows);
}

function renderThroughput(state) {
  const svg = document.getElementById("throughput");
  const points = (state.throughput && state.throughput.points) || [];
  if (points.length < 2) return;
  const peak = Math.max(...points.map((p) => p[1]));
  const top = peak > 0 ? peak * 1.15 : 1;
  const x = (i) => (i / (points.length - 1)) * 600;
  const y = (v) => 120 - (v / top) * 112;
  const line = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
  const ns = "http://www.w3.org/2000/svg";
  const area = document.createElementNS(ns, "path");
  area.setAttribute("class", "area");
  area.setAttribute("d", `${line} L600,120 L0,120 Z`);
  const path = document.createElementNS(ns, "path");
  path.setAttribute("class", "line");
  path.setAttribute("d", line);
  svg.replaceChildren(area, path);
  const minutes = Math.round(state.throughput.window_s / 60);
  const now = points[points.length - 1][1];
  setText("throughput-label", `tokens/s, last ${minutes} min · now ${now.toFixed(1)} · peak ${peak.toFixed(1)}`);
}

function render(state) {
  renderChain(state);
  renderParticipants(state);
  renderMlnodes(state);
  renderFeed(state);
  renderThroughput(state);
  const errors = Object.entries(state.errors || {}).map(([k, v]) => `${k}: ${v}`);
  setText("errors", errors.join(" · "));
  setText("updated", new Date(state.at * 1000).toLocaleTimeString());
  setText("viewers", state.viewers ?? 0);
  lastState = state;
}

function setConn(text, kind) {
  const pill = document.getElementById("conn");
  pill.textContent = text;
  pill.className = `pill pill-${kind}`;
}

function connect() {
  const source = new EventSource("/dashboard/events");
  source.addEventListener("state", (event) => {
    setConn("live", "ok");
    render(JSON.parse(event.data));
  });
  source.onerror = () => setConn("reconnecting", source.readyState === EventSource.CLOSED ? "bad" : "wait");
}

fetch("/dashboard/state.json")
  .then((response) => (response.ok ? response.json() : Promise.reject(new Error(`HTTP ${response.status}`))))
  .then(render)
  .catch((error) => setText("errors", `state: ${error.message}`))
  .finally(connect);
