// batos's page: the household as living panels, fed by the daemon's event stream (GET /api/v1/events) and
// driven through its commands (POST /api/v1/commands/{cmd}). Every text from the daemon or a model is written
// with textContent, never as markup. No inline script: the content-security policy forbids it.
"use strict";

const PERSONAS = ["ALFRED", "BABS", "BRICK", "ROBIN"];
const state = {
  view: null, seq: 0, instance: null, texts: {}, streams: {}, steps: {}, dissonance: {},
  thinking: {}, lastHeard: 0, heartbeatMs: 1000, source: null, trainer: null, goals: {}, exams: [],
};

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

// Commands: JSON over HTTP with the login cookie; the CSRF header marks them as this page's.
async function command(cmd, args) {
  const r = await fetch("/api/v1/commands/" + encodeURIComponent(cmd), {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Batos-Csrf": "1" },
    body: JSON.stringify(args || {}),
    credentials: "same-origin",
  });
  const reply = await r.json().catch(() => ({ ok: false, error: { message: "HTTP " + r.status } }));
  if (!reply.ok) throw new Error(reply.error ? reply.error.message : "HTTP " + r.status);
  return reply.result;
}

function setConnected(live) {
  $("overlay").hidden = live;
  const c = $("conn");
  c.textContent = live ? "live" : "disconnected";
  c.className = "pill " + (live ? "live" : "down");
}

// ---- rendering -------------------------------------------------------------------------------------------

function restartsOf(name) {
  const actors = (state.view && state.view.actors) || {};
  let n = 0;
  for (const [path, a] of Object.entries(actors)) {
    if (path === name || path.endsWith("/" + name)) n = Math.max(n, a.restarts || 0);
  }
  return n;
}

function renderPersonas() {
  const box = $("personas");
  box.replaceChildren();
  const personas = (state.view && state.view.personas) || {};
  for (const name of PERSONAS) {
    const p = personas[name] || {};
    const d = state.dissonance[name] || [];
    const last = d.length ? d[d.length - 1] : null;
    const card = el("article", { class: "persona" + (state.thinking[name] ? " thinking" : ""), id: "persona-" + name },
      el("h3", {}, name),
      el("div", { class: "muted" }, (p.model || "—") + (p.backend ? " · " + p.backend : "")),
      el("div", {}, "restarts: ", el("span", { class: "restarts" }, restartsOf(name))),
      el("div", {}, "swaps: ", p.swaps || 0),
      el("div", {}, "dissonance: ", last === null ? "—" : last.toFixed(2)),
    );
    if (last !== null) card.style.borderColor = `hsl(${Math.round(120 - 120 * last)}, 60%, 45%)`;
    const spark = el("div", { class: "spark", "aria-label": "dissonance history" });
    for (const v of d.slice(-30)) {
      const bar = el("span");
      bar.style.height = Math.max(2, Math.round(24 * v)) + "px";
      spark.append(bar);
    }
    card.append(spark, el("div", { class: "stream" }, state.streams[name] || ""));
    box.append(card);
  }
}

function renderTasks() {
  const list = $("task-list");
  list.replaceChildren();
  const tasks = (state.view && state.view.tasks) || {};
  const ids = Object.keys(tasks).sort((a, b) => (state.steps[b]?.order ?? 0) - (state.steps[a]?.order ?? 0));
  for (const id of ids.slice(0, 50)) {
    const t = tasks[id];
    const item = el("li", { class: "task", id: "task-" + id, "data-status": t.status },
      el("span", { class: "status " + t.status }, t.status), " ",
      el("span", { class: "text" }, state.texts[id] || id));
    const steps = el("ul");
    for (const s of (state.steps[id]?.list || [])) {
      steps.append(el("li", { class: "step" }, `${s.step}. ${s.node} (${s.persona}, ${s.duration_ms} ms): ${s.summary}`));
    }
    item.append(steps);
    const answer = t.result ?? (state.streams["task:" + id] || "");
    if (answer) item.append(el("div", { class: "answer" }, answer));
    if (t.error) item.append(el("div", { class: "answer error" }, t.error));
    if (t.status === "paused" && t.paused) item.append(el("div", { class: "answer paused" }, "Paused for you: " + t.paused));
    if (t.status === "running" || t.status === "queued" || t.status === "paused") {
      const cancel = el("button", { type: "button" }, "Cancel");
      cancel.addEventListener("click", () => command("cancel_task", { id }).catch(alertError));
      item.append(cancel);
    }
    list.append(item);
  }
}

function renderAmendments() {
  const ul = $("amendments");
  ul.replaceChildren();
  const am = (state.view && state.view.amendments) || {};
  for (const [id, a] of Object.entries(am)) {
    const li = el("li", { id: "amendment-" + id, "data-status": a.status },
      el("strong", {}, a.persona), " · ", el("span", { class: "status" }, a.status), " · ",
      el("span", { class: "muted" }, id.slice(0, 8)));
    if (a.status === "pending" || a.status === "proposed") {
      const b = el("button", { type: "button", class: "review" }, "Review");
      b.addEventListener("click", () => openApproval(id, a));
      li.append(" ", b);
    }
    ul.append(li);
  }
}

function renderTools() {
  const ul = $("tool-list");
  ul.replaceChildren();
  for (const [name, t] of Object.entries((state.view && state.view.tools) || {})) {
    ul.append(el("li", { title: t.description }, `${name} v${t.version}`));
  }
}

function renderActors() {
  const body = $("actors");
  body.replaceChildren();
  const actors = (state.view && state.view.actors) || {};
  for (const path of Object.keys(actors).sort()) {
    const a = actors[path];
    body.append(el("tr", {}, el("td", {}, path), el("td", { class: a.status }, a.status), el("td", {}, a.restarts)));
  }
  $("escalations").textContent = (state.view && state.view.escalations) || 0;
}

function renderTrainer() {
  const t = state.trainer;
  if (!t) return;
  $("trainer-state").textContent = t.text;
  if (t.steps) { $("trainer-progress").max = t.steps; $("trainer-progress").value = t.step; }
}

function renderGoals() {
  const ul = $("goal-list");
  ul.replaceChildren();
  for (const g of Object.values(state.goals).slice(-20).reverse()) {
    ul.append(el("li", {}, el("strong", {}, g.status), ` ${g.persona}: `, g.text, el("div", { class: "muted" }, g.reason || "")));
  }
}

function renderExams() {
  const box = $("exam-chart");
  box.replaceChildren();
  for (const e of state.exams.slice(-40)) {
    const bar = el("div", { title: `${e.name}: society ${e.society_pct.toFixed(0)}%` + (e.bare_pct != null ? `, bare ${e.bare_pct.toFixed(0)}%` : "") });
    bar.style.height = Math.max(2, e.society_pct) + "%";
    box.append(bar);
    if (e.bare_pct != null) {
      const b = el("div", { class: "bare" });
      b.style.height = Math.max(2, e.bare_pct) + "%";
      box.append(b);
    }
  }
  if (!state.exams.length) box.append(el("p", { class: "muted" }, "no exam yet"));
}

// A section is drawn again only when what it shows changed: a control a person has focused (a Review or Cancel
// button) keeps its focus while unrelated events stream in.
const drawn = {};
function renderIf(name, data, draw) {
  const key = JSON.stringify(data);
  if (drawn[name] === key) return;
  drawn[name] = key;
  draw();
}

function renderAll() {
  const v = state.view || {};
  renderIf("personas", [v.personas, v.actors, state.dissonance, state.thinking, state.streams], renderPersonas);
  renderIf("tasks", [v.tasks, state.texts, state.steps, state.streams], renderTasks);
  renderIf("amendments", v.amendments, renderAmendments);
  renderIf("tools", v.tools, renderTools);
  renderIf("actors", [v.actors, v.escalations], renderActors);
  renderIf("trainer", state.trainer, renderTrainer);
  renderIf("goals", state.goals, renderGoals);
  renderIf("exams", state.exams, renderExams);
  $("seq").textContent = "seq " + state.seq;
}

// ---- the event fold (what the daemon's StateView does, for what this page shows) ---------------------------

let order = 0;
function apply(kind, d) {
  const v = state.view;
  const task = (id) => (v.tasks[id] = v.tasks[id] || { status: "queued", steps: 0, dissonance: null, result: null, error: null });
  switch (kind) {
    case "task.submitted": task(d.id); state.texts[d.id] = d.text; state.steps[d.id] = { order: ++order, list: [] }; break;
    case "task.status": Object.assign(task(d.id), { status: d.status, paused: null }); break;
    case "task.step": {
      const t = task(d.id); t.steps = d.step; if (d.dissonance != null) t.dissonance = d.dissonance;
      (state.steps[d.id] = state.steps[d.id] || { order: ++order, list: [] }).list.push(d);
      state.thinking[d.persona] = false;
      if (d.dissonance != null) (state.dissonance[d.persona] = state.dissonance[d.persona] || []).push(d.dissonance);
      break;
    }
    case "task.token":
      if (!state.thinking[d.persona]) state.streams[d.persona] = "";  // a new step's words
      state.thinking[d.persona] = true;
      state.streams[d.persona] = ((state.streams[d.persona] || "") + d.text).slice(-400);
      if (d.persona === "ALFRED") state.streams["task:" + d.id] = (state.streams["task:" + d.id] || "") + d.text;
      break;
    case "task.done": Object.assign(task(d.id), { status: "done", result: d.result, paused: null }); clearThinking(); break;
    case "task.failed": Object.assign(task(d.id), { status: "failed", error: d.error }); clearThinking(); break;
    case "task.cancelled": task(d.id).status = "cancelled"; clearThinking(); break;
    case "task.paused": Object.assign(task(d.id), { status: "paused", paused: d.reason }); break;
    case "persona.state": {
      const p = (v.personas[d.persona] = v.personas[d.persona] || { swaps: 0 });
      Object.assign(p, { model: d.model, backend: d.backend, state: d.state });
      break;
    }
    case "model.swapped": {
      const p = (v.personas[d.persona] = v.personas[d.persona] || { swaps: 0 });
      p.model = d.to; p.swaps = (p.swaps || 0) + 1;
      break;
    }
    case "actor.started": case "actor.restarted":
      v.actors[d.actor] = Object.assign(v.actors[d.actor] || {}, { status: "running", restarts: d.restarts }); break;
    case "actor.failed": v.actors[d.actor] = Object.assign(v.actors[d.actor] || { restarts: 0 }, { status: "failed" }); break;
    case "actor.stopped": if (v.actors[d.actor]) v.actors[d.actor].status = "stopped"; break;
    case "actor.escalated": v.escalations = (v.escalations || 0) + 1;
      v.actors[d.supervisor] = Object.assign(v.actors[d.supervisor] || { restarts: 0 }, { status: "escalated" }); break;
    case "tool.created": v.tools[d.name] = { version: d.version, description: d.description }; break;
    case "amendment.proposed": v.amendments[d.id] = { status: "pending", persona: d.persona, rationale: d.rationale }; break;
    case "amendment.committed": if (v.amendments[d.id]) v.amendments[d.id].status = "committed"; break;
    case "amendment.rejected": if (v.amendments[d.id]) v.amendments[d.id].status = "rejected"; break;
    case "trainer.progress": state.trainer = { step: d.step, steps: d.steps, text: `${d.persona}: step ${d.step}/${d.steps}, loss ${d.loss.toFixed(3)}, ${d.tokens_per_s.toFixed(0)} tok/s, ${Math.round(d.eta_s)} s left` }; break;
    case "trainer.publishing": state.trainer = Object.assign(state.trainer || {}, { text: "publishing the adapter (the gate)…" }); break;
    case "trainer.rejected": state.trainer = Object.assign(state.trainer || {}, { text: "the gate rejected the adapter" }); break;
    case "trainer.failed": state.trainer = Object.assign(state.trainer || {}, { text: "training failed" }); break;
    case "model.tuned": state.trainer = Object.assign(state.trainer || {}, { text: "a tuned adapter was swapped in" }); break;
    case "motivator.goal": state.goals[d.id] = d; break;
    case "exam.scored": loadExams(); break;
  }
}

function clearThinking() { for (const n of PERSONAS) state.thinking[n] = false; }

// ---- the stream -------------------------------------------------------------------------------------------

function connect() {
  const src = new EventSource("/api/v1/events");
  state.source = src;
  src.addEventListener("snapshot", (m) => {
    const s = JSON.parse(m.data);
    state.view = s.view; state.seq = s.seq; state.instance = s.instance; state.lastHeard = Date.now();
    for (const k of ["actors", "tasks", "personas", "tools", "amendments"]) state.view[k] = state.view[k] || {};
    setConnected(true);
    loadTexts(); loadExams(); loadGoals();
    renderAll();
  });
  src.addEventListener("heartbeat", (m) => {
    const h = JSON.parse(m.data);
    state.lastHeard = Date.now();
    if (state.instance && h.data && h.data.instance !== state.instance) { src.close(); connect(); return; }
    setConnected(true);
  });
  src.addEventListener("resync", () => { state.lastHeard = Date.now(); });
  src.onmessage = null;
  src.onerror = () => {
    setConnected(false);
    // A refused or failed request closes an EventSource for good (a network error alone is retried by the
    // browser): open a new one a little later.
    if (src.readyState === EventSource.CLOSED) setTimeout(() => { if (state.source === src) connect(); }, 2000);
  };
  const kinds = ["task.submitted", "task.status", "task.step", "task.token", "task.done", "task.failed", "task.cancelled",
    "task.paused", "persona.state", "model.swapped", "actor.started", "actor.restarted", "actor.failed", "actor.stopped",
    "actor.escalated", "tool.created", "amendment.proposed", "amendment.committed", "amendment.rejected", "trainer.progress",
    "trainer.publishing", "trainer.rejected", "trainer.failed", "model.tuned", "motivator.goal", "exam.scored"];
  for (const k of kinds) {
    src.addEventListener(k, (m) => {
      if (!state.view) return;
      const e = JSON.parse(m.data);
      state.seq = e.seq; state.lastHeard = Date.now();
      apply(k, e.data);
      scheduleRender();
    });
  }
}

let pending = false;
function scheduleRender() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; renderAll(); });
}

// Silence past three heartbeats means the daemon is gone even if the socket has not noticed yet.
setInterval(() => {
  if (state.view && Date.now() - state.lastHeard > 3 * state.heartbeatMs + 500) setConnected(false);
}, 500);

async function loadTexts() {
  try {
    const r = await command("list_tasks");
    for (const t of r.tasks || r || []) if (t && t.id) state.texts[t.id] = t.text;
    scheduleRender();
  } catch (_) { /* the list is a nicety; the stream has the rest */ }
}
async function loadExams() {
  try { const r = await command("exam_history"); state.exams = (r.exams || []).slice().reverse(); scheduleRender(); } catch (_) {}
}
async function loadGoals() {
  try { const r = await command("list_goals"); for (const g of r.goals || []) state.goals[g.id] = g; scheduleRender(); } catch (_) {}
}

// ---- actions -------------------------------------------------------------------------------------------------

function alertError(e) { $("inspector-said").textContent = "refused: " + e.message; }

let reviewing = null;
async function openApproval(id, a) {
  reviewing = id;
  $("approve-id").textContent = id.slice(0, 8);
  $("approve-persona").textContent = a.persona;
  $("approve-text").textContent = a.rationale || "";
  try {
    const r = await command("list_amendments");
    const found = (r.amendments || []).find((x) => x.id === id);
    const p = found && found.proposal;
    if (p) {
      const lines = ["Why: " + (p.rationale || "(no reason given)"), ""];
      for (const [field, value] of Object.entries(p.changes || {})) {
        lines.push(`${p.persona}.${field} becomes:`, typeof value === "string" ? value : JSON.stringify(value, null, 2), "");
      }
      $("approve-text").textContent = lines.join("\n");
    }
  } catch (_) {}
  $("approve").showModal();
}

function wire() {
  $("ask").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("ask-text").value.trim();
    if (!text) return;
    try { await command("submit_task", { text }); $("ask-text").value = ""; } catch (e) { alertError(e); }
  });
  $("approve").addEventListener("close", async () => {
    const how = $("approve").returnValue;
    if (!reviewing || (how !== "approve" && how !== "reject")) return;
    const args = how === "approve" ? { id: reviewing } : { id: reviewing, reason: "rejected from the page" };
    try { await command(how + "_amendment", args); } catch (e) { alertError(e); }
  });
  $("surgery").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let value;
    try { value = JSON.parse($("surgery-value").value); } catch (_) { value = $("surgery-value").value; }
    try {
      await command("update_persona", { persona: $("surgery-persona").value, field: $("surgery-field").value, value });
      $("inspector-said").textContent = "applied";
    } catch (e) { alertError(e); }
  });
  $("swap").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { await command("swap_model", { persona: $("swap-persona").value, model: $("swap-model").value }); $("inspector-said").textContent = "swapped"; }
    catch (e) { alertError(e); }
  });
  $("rollback").addEventListener("click", async () => {
    try { await command("rollback_model", { persona: $("swap-persona").value }); $("inspector-said").textContent = "rolled back"; }
    catch (e) { alertError(e); }
  });
}

async function start() {
  const r = await fetch("/api/v1/session", { credentials: "same-origin" }).then((x) => x.json()).catch(() => null);
  if (r && !r.logged_in) { $("login").hidden = false; $("conn").textContent = "logged out"; return; }
  $("app").hidden = false;
  wire();
  connect();
}

document.addEventListener("DOMContentLoaded", start);
