// The Cerver dashboard: plain DOM code, no build step. Everything that comes from the server
// (metadata, names, emails) is put on the page as text (textContent, createTextNode, SVG
// attributes), never parsed as HTML, so user-controlled strings cannot become markup.
"use strict";

const $ = (id) => document.getElementById(id);
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const PAGES = ["overview", "keys", "sandboxes", "quickstart"];
let account = null;

// A table cell with its column's name (shown as a label when rows become cards on a phone).
function cell(label, props, ...children) {
  const td = el("td", props, ...children);
  td.dataset.label = label;
  return td;
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const c of children) node.append(c);
  return node;
}

function say(message, isError) {
  const s = $("status");
  s.textContent = message || "";
  s.className = isError ? "error" : "";
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (resp.status === 401 && csrf) { location.replace("/dashboard"); }
  if (!resp.ok) throw new Error(data.error || `HTTP ${resp.status}`);
  return data;
}

const fmtDate = (secs) => secs ? new Date(secs * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC" : "never";
const fmtDay = (secs) => new Date(secs * 1000).toISOString().slice(5, 10);
function fmtDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  if (h) return m ? `${h}h ${m}m` : `${h}h`;
  if (m) return r ? `${m}m ${r}s` : `${m}m`;
  return `${r}s`;
}

// ---- signed out: sign in and sign up ----

function emailForm(formId, inputId, noteId, path, done) {
  $(formId).addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const note = $(noteId);
    try {
      await api("POST", path, { email: $(inputId).value });
      note.textContent = done;
      note.className = "note ok";
    } catch (e) {
      note.textContent = e.message;
      note.className = "note error";
    }
  });
}

// ---- overview ----

function renderOverview() {
  const a = account;
  $("plan-name").textContent = a.plan;
  const limits = $("limits");
  limits.replaceChildren();
  const rows = [
    ["Requests per day", a.limits.requests_per_day.toLocaleString("en")],
    ["Sandboxes at once", String(a.limits.max_sandboxes)],
    ["Longest sandbox lifetime", fmtDuration(a.limits.max_timeout_ms)],
    ["Exposed ports", a.limits.port_exposure ? "yes" : "no"],
  ];
  for (const [k, v] of rows) limits.append(el("dt", { textContent: k }), el("dd", { textContent: v }));
  $("usage-today").textContent = a.usage.today.toLocaleString("en");
  $("usage-limit").textContent = a.usage.daily_limit.toLocaleString("en");
  const share = a.usage.daily_limit ? Math.min(1, a.usage.today / a.usage.daily_limit) : 0;
  $("usage-fill").style.width = `${(share * 100).toFixed(1)}%`;
  const meter = $("usage-meter");
  meter.setAttribute("aria-valuemax", String(a.usage.daily_limit));
  meter.setAttribute("aria-valuenow", String(a.usage.today));
  $("usage-reset").textContent = `Resets at ${fmtDate(a.usage.resets_at)}.`;
  renderChart(a.usage.days);
}

function renderChart(days) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 700, H = 220, top = 20, bottom = 30, left = 8;
  const max = Math.max(1, ...days.map((d) => d.requests));
  const slot = (W - left) / days.length, barW = slot * 0.7;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Requests per day: " + days.map((d) => `${fmtDay(d.date)} ${d.requests}`).join(", "));
  const axis = document.createElementNS(NS, "line");
  axis.setAttribute("x1", String(left));
  axis.setAttribute("x2", String(W));
  axis.setAttribute("y1", String(H - bottom));
  axis.setAttribute("y2", String(H - bottom));
  axis.setAttribute("class", "baseline");
  svg.append(axis);
  days.forEach((d, i) => {
    const h = (d.requests / max) * (H - top - bottom);
    const x = left + i * slot + (slot - barW) / 2;
    const bar = document.createElementNS(NS, "rect");
    bar.setAttribute("x", x.toFixed(1));
    bar.setAttribute("y", (H - bottom - h).toFixed(1));
    bar.setAttribute("width", barW.toFixed(1));
    bar.setAttribute("height", Math.max(h, d.requests ? 1 : 0).toFixed(1));
    bar.setAttribute("class", i === days.length - 1 ? "bar today" : "bar");
    const tip = document.createElementNS(NS, "title");
    tip.textContent = `${fmtDay(d.date)}: ${d.requests} requests`;
    bar.append(tip);
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", (x + barW / 2).toFixed(1));
    label.setAttribute("y", String(H - 10));
    label.setAttribute("class", "axis");
    label.textContent = fmtDay(d.date);
    const value = document.createElementNS(NS, "text");
    value.setAttribute("x", (x + barW / 2).toFixed(1));
    value.setAttribute("y", (H - bottom - h - 5).toFixed(1));
    value.setAttribute("class", "value");
    value.textContent = d.requests ? String(d.requests) : "";
    svg.append(bar, label, value);
  });
  $("chart").replaceChildren(svg);
}

// ---- keys ----

async function loadKeys() {
  const { keys } = await api("GET", "/account/keys");
  const body = $("keys-table").tBodies[0];
  body.replaceChildren();
  for (const k of keys) {
    const revoke = el("button", { type: "button", className: "danger", textContent: "Revoke" });
    revoke.setAttribute("aria-label", `Revoke key ${k.prefix}`);
    revoke.addEventListener("click", async () => {
      if (!confirm(`Revoke ${k.prefix}…? Programs using it stop working at once.`)) return;
      try {
        await api("DELETE", `/account/keys/${encodeURIComponent(k.key_id)}`);
        say(`Key ${k.prefix}… revoked.`);
        await loadKeys();
      } catch (e) { say(e.message, true); }
    });
    body.append(el("tr", { className: "key-row" },
      cell("Key", {}, el("code", { textContent: k.masked })),
      cell("Name", { textContent: k.name || "—" }),
      cell("Created", { textContent: fmtDate(k.created_at) }),
      cell("Last used", { textContent: fmtDate(k.last_used_at) }),
      el("td", {}, revoke)));
  }
  $("keys-empty").hidden = keys.length > 0;
}

async function createKey(ev) {
  ev.preventDefault();
  try {
    const name = $("key-name").value.trim();
    const created = await api("POST", "/account/keys", name ? { name } : {});
    $("new-key-value").textContent = created.api_key;
    $("new-key").hidden = false;
    $("key-name").value = "";
    renderQuickstart(created.api_key);
    say("Key created. Copy it now: it is shown only once.");
    await loadKeys();
    $("new-key-copy").focus();
  } catch (e) { say(e.message, true); }
}

// ---- sandboxes ----

async function loadSandboxes() {
  const { sandboxes } = await api("GET", "/account/sandboxes");
  const body = $("sandboxes-table").tBodies[0];
  body.replaceChildren();
  for (const s of sandboxes) {
    const kill = el("button", { type: "button", className: "danger", textContent: "Kill" });
    kill.setAttribute("aria-label", `Kill sandbox ${s.sandbox_id}`);
    kill.addEventListener("click", async () => {
      if (!confirm(`Kill sandbox ${s.sandbox_id}? Its processes and files are lost.`)) return;
      try {
        await api("DELETE", `/account/sandboxes/${encodeURIComponent(s.sandbox_id)}`);
        say(`Sandbox ${s.sandbox_id} killed.`);
        await loadSandboxes();
      } catch (e) { say(e.message, true); }
    });
    const meta = Object.keys(s.metadata || {}).length ? JSON.stringify(s.metadata) : "—";
    const row = el("tr", { className: "sandbox-row" },
      cell("Sandbox", {}, el("code", { textContent: s.sandbox_id })),
      cell("Engine", { textContent: s.engine }),
      cell("Status", { textContent: s.status }),
      cell("Metadata", { className: "metadata" }, el("code", { textContent: meta })),
      cell("Time left", { textContent: fmtDuration(s.time_remaining_ms) }),
      el("td", {}, kill));
    row.dataset.sandboxId = s.sandbox_id;
    body.append(row);
  }
  $("sandboxes-empty").hidden = sandboxes.length > 0;
}

// ---- quick start ----

function renderQuickstart(key) {
  const base = location.origin;
  const k = key || "$CERVER_API_KEY";
  $("qs-curl").textContent =
`curl -s ${base}/sandbox \\
  -H "Authorization: Bearer ${k}" -H "Content-Type: application/json" \\
  -d '{"engine": "workers"}'
# {"sandbox_id": "...", ...}

curl -s ${base}/sandbox/SANDBOX_ID/run \\
  -H "Authorization: Bearer ${k}" -H "Content-Type: application/json" \\
  -d '{"code": "print(6 * 7)"}'`;
  $("qs-python").textContent =
`# in a shell (the SDK is sdk/python in Cerver's repository)
pip install ./sdk/python
export CERVER_API_URL=${base} CERVER_API_KEY=${k}

# in Python
from cerver import Sandbox

with Sandbox() as sandbox:  # deleted on exit
    print(sandbox.run("print(6 * 7)").output)  # 42`;
}

// ---- navigation ----

async function show() {
  const page = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : "overview";
  for (const p of PAGES) $(`page-${p}`).hidden = p !== page;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    if (page === "overview") {
      account = await api("GET", "/account");
      renderOverview();
    } else if (page === "keys") await loadKeys();
    else if (page === "sandboxes") await loadSandboxes();
  } catch (e) { say(e.message, true); }
  document.body.dataset.page = page;
}

async function start() {
  if (!csrf) {
    $("signed-out").hidden = false;
    emailForm("login-form", "login-email", "login-note", "/auth/login",
      "If this address has an account, a sign-in link is on its way. Check your email.");
    emailForm("signup-form", "signup-email", "signup-note", "/auth/signup",
      "Check your email for the verification link: it shows your API key once.");
    document.body.dataset.page = "signed-out";
    return;
  }
  $("nav").hidden = false;
  $("logout").hidden = false;
  $("logout").addEventListener("click", async () => {
    try { await api("POST", "/auth/logout"); } catch (e) { /* signed out anyway */ }
    location.replace("/dashboard");
  });
  $("key-form").addEventListener("submit", createKey);
  $("new-key-copy").addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText($("new-key-value").textContent));
  $("new-key-done").addEventListener("click", () => { $("new-key").hidden = true; $("new-key-value").textContent = ""; });
  $("sandboxes-refresh").addEventListener("click", () => loadSandboxes().catch((e) => say(e.message, true)));
  renderQuickstart();
  try {
    account = await api("GET", "/account");
    $("who").textContent = account.email;
  } catch (e) { say(e.message, true); }
  window.addEventListener("hashchange", () => { say(""); show(); });
  await show();
}

document.addEventListener("DOMContentLoaded", start);
