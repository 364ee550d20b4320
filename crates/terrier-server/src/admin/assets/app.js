// terrier dashboard: plain JavaScript, no build step, no dependencies.
// Signs in with the admin token (kept in sessionStorage for this tab only),
// follows /api/v1/live (a WebSocket sending the device list every second)
// and calls the JSON API for details and actions. Every value from the
// server goes into the page as text, never as HTML.
"use strict";

const TOKEN_KEY = "terrier.admin.token";
const HISTORY = 60; // sparkline points: one per live snapshot (1 s)

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  filter: "all",
  query: "",
  devices: [],
  history: new Map(), // name -> { last: {at, bytes}, rates: [] }
  socket: null,
  retry: 0,
  server: null,
  requestsTimer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) {
    signOut("The admin token was not accepted.");
    throw new Error("unauthorized");
  }
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((json && json.error) || `HTTP ${response.status}`);
  return json;
}

// ---------- formatting ----------

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function until(ms) {
  return ago(2 * Date.now() - ms);
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// ---------- sign in / out ----------

async function signIn(token) {
  state.token = token;
  try {
    state.server = await api("GET", "/server");
  } catch (e) {
    state.token = null;
    throw e;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  showApp();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  if (state.socket) { state.socket.onclose = null; state.socket.close(); state.socket = null; }
  clearInterval(state.requestsTimer);
  $("signin").hidden = false;
  $("devices-view").hidden = true;
  $("detail-view").hidden = true;
  $("signout").hidden = true;
  $("live").hidden = true;
  $("server").textContent = "";
  $("signin-error").textContent = message || "";
  $("token").value = "";
  $("token").focus();
}

function showApp() {
  $("signin").hidden = true;
  $("signout").hidden = false;
  $("live").hidden = false;
  const s = state.server;
  $("server").textContent = `${s.domain} · terrierd ${s.version} · node ${s.node_id} · ${s.store} store`;
  connectLive();
  route();
}

// ---------- live updates ----------

function connectLive() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/v1/live`);
  state.socket = socket;
  setLive(false, "connecting…");
  socket.onopen = () => socket.send(state.token);
  socket.onmessage = (event) => {
    state.retry = 0;
    const snapshot = JSON.parse(event.data);
    if (snapshot.error) { setLive(false, "store unavailable"); return; }
    setLive(true, "live");
    update(snapshot);
  };
  socket.onclose = (event) => {
    if (event.code === 4401) { signOut("The admin token was not accepted."); return; }
    if (!state.token) return;
    const delay = Math.min(10000, 500 * 2 ** state.retry++);
    setLive(false, "reconnecting…");
    setTimeout(() => { if (state.token) connectLive(); }, delay);
  };
}

function setLive(up, text) {
  $("live").classList.toggle("down", !up);
  $("live-text").textContent = text;
}

function update(snapshot) {
  state.devices = snapshot.devices;
  for (const d of snapshot.devices) {
    const total = (d.bytes_in || 0) + (d.bytes_out || 0);
    let h = state.history.get(d.name);
    if (!h) { h = { last: null, rates: [] }; state.history.set(d.name, h); }
    if (h.last && d.online && total >= h.last.bytes && snapshot.at_ms > h.last.at) {
      h.rates.push(((total - h.last.bytes) * 1000) / (snapshot.at_ms - h.last.at));
    } else {
      h.rates.push(0);
    }
    if (h.rates.length > HISTORY) h.rates.shift();
    h.last = { at: snapshot.at_ms, bytes: total };
  }
  renderSummary();
  renderTable();
  renderDetail();
}

function rate(name) {
  const h = state.history.get(name);
  return h && h.rates.length ? h.rates[h.rates.length - 1] : 0;
}

// ---------- device list ----------

function visible() {
  const q = state.query;
  return state.devices.filter((d) =>
    (state.filter === "all" || (state.filter === "online") === d.online) &&
    (!q || d.name.includes(q) || d.subdomain.includes(q)));
}

function renderSummary() {
  const online = state.devices.filter((d) => d.online).length;
  $("stat-online").textContent = online;
  $("stat-offline").textContent = state.devices.length - online;
  const total = state.devices.reduce((sum, d) => sum + rate(d.name), 0);
  $("stat-rate").textContent = `${bytes(total)}/s`;
}

function portsOf(d) {
  if (!d.tcp.length) return el("span", { class: "meta" }, "—");
  return el("div", { class: "ports" }, ...d.tcp.map((t) => el("span", { class: "port", title: `service ${t.service}` }, `${t.port}→${t.service}`)));
}

function renderTable() {
  const rows = visible().map((d) => {
    const link = d.http === false
      ? el("span", { class: "meta" }, "TCP only")
      : el("a", { href: d.url, target: "_blank", rel: "noopener", class: "mono", onclick: (e) => e.stopPropagation() }, d.url.replace(/^https?:\/\//, ""));
    const when = d.online
      ? el("div", {}, `online ${ago(d.connected_since_ms)}`, el("div", { class: "meta" }, `since ${clock(d.connected_since_ms)}`))
      : el("div", {}, `seen ${ago(d.last_seen_ms)} ago`, el("div", { class: "meta" }, d.expires_at_ms ? `lease ends in ${until(d.expires_at_ms)}` : ""));
    const traffic = d.bytes_in === null
      ? el("span", { class: "meta" }, d.online ? `on ${d.node}` : "—")
      : el("div", {}, `↓ ${bytes(d.bytes_in)}  ↑ ${bytes(d.bytes_out)}`, el("div", { class: "meta" }, `${bytes(rate(d.name))}/s`));
    return el("tr", { class: d.online ? "online" : "offline", dataset: { name: d.name, state: d.online ? "online" : "offline" }, onclick: () => { location.hash = `#/device/${encodeURIComponent(d.name)}`; } },
      el("td", {}, el("div", { class: "name" }, el("span", { class: "dot", title: d.online ? "online" : "offline" }), d.name),
        el("div", { class: "meta" }, [d.agent, d.platform].filter(Boolean).join(" · ") || (d.online ? "" : "offline"))),
      el("td", { class: "col-addr" }, link),
      el("td", { class: "col-ports" }, portsOf(d)),
      el("td", { class: "col-when" }, when),
      el("td", { class: "num" }, traffic),
      el("td", { class: "col-spark" }, sparkline(d.name, false)));
  });
  $("device-rows").replaceChildren(...rows);
  $("empty").hidden = rows.length > 0;
  $("empty").textContent = state.devices.length ? "No device matches." : "No devices yet. Connect one with: terrier --server URL --name NAME --http 80";
}

function sparkline(name, big, svg) {
  const ns = "http://www.w3.org/2000/svg";
  const target = svg || document.createElementNS(ns, "svg");
  const w = big ? 300 : 120, h = big ? 80 : 28;
  if (!svg) {
    target.setAttribute("class", "spark");
    target.setAttribute("viewBox", `0 0 ${w} ${h}`);
    target.setAttribute("preserveAspectRatio", "none");
  }
  const rates = (state.history.get(name) || { rates: [] }).rates;
  const padded = Array(Math.max(0, HISTORY - rates.length)).fill(0).concat(rates);
  const max = Math.max(1, ...padded);
  const points = padded.map((r, i) => `${(i * w / (HISTORY - 1)).toFixed(1)},${(h - 1 - (r / max) * (h - 3)).toFixed(1)}`);
  const area = document.createElementNS(ns, "polygon");
  area.setAttribute("points", `0,${h} ${points.join(" ")} ${w},${h}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  target.replaceChildren(area, line);
  return target;
}

// ---------- device detail ----------

function route() {
  const match = location.hash.match(/^#\/device\/(.+)$/);
  clearInterval(state.requestsTimer);
  if (match) {
    state.selected = decodeURIComponent(match[1]);
    $("devices-view").hidden = true;
    $("detail-view").hidden = false;
    $("reserve-msg").textContent = "A reserved subdomain applies from the device's next connection.";
    renderDetail();
    loadRequests();
    state.requestsTimer = setInterval(loadRequests, 2000);
  } else {
    state.selected = null;
    $("detail-view").hidden = true;
    $("devices-view").hidden = false;
  }
}

function renderDetail() {
  if (!state.selected) return;
  const d = state.devices.find((x) => x.name === state.selected);
  $("detail-name").textContent = state.selected;
  const badge = $("detail-state");
  if (!d) {
    badge.textContent = "unknown";
    badge.className = "badge";
    $("detail-facts").replaceChildren(el("dt", {}, "State"), el("dd", {}, "No lease: the device has not connected, or its grace period ended."));
    return;
  }
  badge.textContent = d.online ? "online" : "offline";
  badge.className = d.online ? "badge on" : "badge";
  $("disconnect").disabled = !d.online;
  const facts = [
    ["Address", d.http === false ? "no HTTP service (TCP only)" : el("a", { href: d.url, target: "_blank", rel: "noopener" }, d.url)],
    ["Subdomain", el("span", { class: "mono" }, d.subdomain + (d.reserved_subdomain ? "  (reserved: " + d.reserved_subdomain + ")" : ""))],
    ["TCP ports", d.tcp.length ? d.tcp.map((t) => `${d.tcp_host}:${t.port} → ${t.service}`).join(", ") : "none"],
    d.online ? ["Connected", `${clock(d.connected_since_ms)} (${ago(d.connected_since_ms)})`] : ["Last seen", `${clock(d.last_seen_ms)} (${ago(d.last_seen_ms)} ago)`],
    d.online ? ["Node", d.node] : ["Lease ends", d.expires_at_ms ? clock(d.expires_at_ms) : "—"],
    ["Agent", [[d.agent, d.platform].filter(Boolean).join(" on "), d.agent_address && "from " + d.agent_address].filter(Boolean).join(", ") || "—"],
    ...(d.name_conflict ? [["Name conflict", el("strong", {}, d.name_conflict)]] : []),
    ["Data streams", d.streams_open === null ? "—" : `${d.streams_open} open, ${d.streams_total} since connected`],
  ];
  $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  $("detail-rate").textContent = `${bytes(rate(d.name))}/s`;
  $("detail-totals").textContent = d.bytes_in === null ? "no counters (offline or on another node)" : `↓ ${bytes(d.bytes_in)} in · ↑ ${bytes(d.bytes_out)} out`;
  sparkline(d.name, true, $("detail-spark"));
  if (document.activeElement !== $("reserve-input")) $("reserve-input").value = d.reserved_subdomain || "";
}

// A title line, then one "name: value" line per header (secrets arrive masked).
function headerText(title, headers) {
  return `${title} headers\n` + (headers.length ? headers.map(([n, v]) => `  ${n}: ${v}`).join("\n") : "  (none)");
}

async function loadRequests() {
  if (!state.selected) return;
  try {
    const { requests } = await api("GET", `/devices/${encodeURIComponent(state.selected)}/requests`);
    $("request-rows").replaceChildren(...requests.map((r) => el("tr", {},
      el("td", {}, clock(r.at_ms)),
      el("td", { class: "mono" }, r.method),
      el("td", { class: "mono" }, el("details", {},
        el("summary", {}, r.path),
        el("pre", { class: "headers" }, headerText("Request", r.request_headers) + "\n" + headerText("Answer", r.response_headers)))),
      el("td", { class: `num status-${String(r.status)[0]}` }, r.status),
      el("td", { class: "num" }, `${r.duration_ms} ms`),
      el("td", { class: "num" }, r.size === null ? "stream" : bytes(r.size)),
      el("td", { class: "mono" }, r.who ?? ""))));
    $("requests-empty").hidden = requests.length > 0;
  } catch (e) { /* shown on the next try */ }
}

// ---------- wiring ----------

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin-error").textContent = "";
    try {
      await signIn($("token").value.trim());
    } catch (e) {
      $("signin-error").textContent = e.message === "unauthorized" ? "The admin token was not accepted." : `Could not sign in: ${e.message}`;
    }
  });
  $("signout").addEventListener("click", () => signOut(""));
  $("search").addEventListener("input", (e) => { state.query = e.target.value.trim().toLowerCase(); renderTable(); });
  for (const button of document.querySelectorAll(".filters button")) {
    button.addEventListener("click", () => {
      state.filter = button.dataset.filter;
      for (const b of document.querySelectorAll(".filters button")) b.classList.toggle("active", b === button);
      renderTable();
    });
  }
  $("back").addEventListener("click", (e) => { e.preventDefault(); location.hash = ""; });
  window.addEventListener("hashchange", route);
  $("disconnect").addEventListener("click", async () => {
    try {
      await api("POST", `/devices/${encodeURIComponent(state.selected)}/disconnect`);
      $("reserve-msg").textContent = "Disconnected; the agent reconnects by itself.";
    } catch (e) { $("reserve-msg").textContent = e.message; }
  });
  $("reserve-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const r = await api("PUT", `/reservations/${encodeURIComponent(state.selected)}`, { subdomain: $("reserve-input").value.trim() });
      $("reserve-msg").textContent = `Reserved ${r.subdomain}: used from the device's next connection.`;
    } catch (e) { $("reserve-msg").textContent = e.message; }
  });
  $("unreserve").addEventListener("click", async () => {
    try {
      await api("DELETE", `/reservations/${encodeURIComponent(state.selected)}`);
      $("reserve-msg").textContent = "Reservation released.";
    } catch (e) { $("reserve-msg").textContent = e.message; }
  });
  if (state.token) {
    signIn(state.token).catch(() => signOut(""));
  } else {
    signOut("");
  }
});
