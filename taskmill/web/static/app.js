// The taskmill dashboard: one event stream (api/events) keeps the page live; actions are POSTs.
"use strict";

const $ = (sel) => document.querySelector(sel);
const MAX_EVENTS = 150;
let state = null;          // the latest state from the server
let historyOffset = 0;
let historyDue = 0;        // when history may be reloaded after tasks finished
const PAGE = 50;
const RATE_WINDOW_MS = 5000;
const finishedLog = [];    // [time, tasks finished] of the batches of the last RATE_WINDOW_MS

// -- helpers ---------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

function time(iso) { return iso ? new Date(iso).toLocaleTimeString() : ""; }
function pct(x) { return (100 * x).toFixed(1) + "%"; }
function took(ms) { return ms === null || ms === undefined ? "" : ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(1) + " s"; }
function rate(bps) { return (bps / 1e6).toFixed(1) + " MB/s"; }

function toast(text) {
  const t = $("#toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "X-Taskmill": "1", "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function act(path, body, done) {
  api(path, body).then((data) => { if (done) done(data); }).catch((e) => toast(e.message));
}

function bar(percent, reported) {
  return h("div", { class: reported ? "bar" : "bar estimated", title: reported ? "reported" : "estimated" },
    h("span", { style: `width:${pct(percent)}` }), h("em", {}, pct(percent)));
}

function setBar(el, percent) {
  el.querySelector("span").style.width = pct(percent);
  el.querySelector("em").textContent = pct(percent);
}

// -- running tasks ---------------------------------------------------------------------------

function runningRow(t) {
  return h("tr", { "data-task-id": t.id, onclick: () => showTask(t.id) },
    h("td", {}, t.id), h("td", {}, t.task_type), h("td", {}, t.label), h("td", {}, t.group || ""),
    h("td", {}, t.priority ?? ""), h("td", {}, bar(t.percent || 0, t.reported)), h("td", {}, time(t.started_at)),
    h("td", {}, h("button", {
      class: "cancel danger", "data-task-id": t.id, type: "button",
      onclick: (e) => { e.stopPropagation(); act(`api/tasks/${t.id}/cancel`, {}, (r) => toast(r.cancelled ? `#${t.id} cancelled` : `#${t.id} was no longer active`)); },
    }, "Cancel")));
}

function renderRunning(tasks) {
  // Rows are kept and updated in place, so a button under the pointer stays the same button.
  const body = $("#running tbody");
  const keep = new Set(tasks.map((t) => String(t.id)));
  for (const row of [...body.children]) if (!keep.has(row.dataset.taskId)) row.remove();
  for (const t of tasks) {
    const row = body.querySelector(`tr[data-task-id="${t.id}"]`);
    if (!row) { body.append(runningRow(t)); continue; }
    const el = row.querySelector(".bar");
    el.classList.toggle("estimated", !t.reported);
    setBar(el, t.percent || 0);
    row.children[3].textContent = t.group || "";
    row.children[4].textContent = t.priority ?? "";
  }
  updateRunningCount();
}

function updateRunningCount() {
  const n = $("#running tbody").children.length;
  $("#running-empty").hidden = n > 0;
  $("#running-count").textContent = state ? `${n} of ${state.max_concurrency}` : String(n);
}

// -- the state -------------------------------------------------------------------------------

function renderState(s) {
  state = s;
  const pill = $("#state");
  pill.textContent = s.paused ? "paused" : "dispatching";
  pill.className = s.paused ? "pill paused" : "pill";
  $("#pause").disabled = s.paused;
  $("#resume").disabled = !s.paused;
  renderRunning(s.running);

  const c = s.counts;
  $("#counts").replaceChildren(...["pending", "scheduled", "paused", "waiting", "running"].map(
    (k) => h("div", { "data-count": k }, h("b", {}, c[k]), k)));
  const groups = s.controls.groups;
  const pausedGroups = new Set(s.paused_groups || []);
  $("#depth tbody").replaceChildren(...s.depth.map((d) => h("tr", {},
    h("td", {}, d.priority), h("td", {}, d.group ?? h("span", { class: "muted" }, "none")), h("td", {}, d.count),
    h("td", {}, groups && d.group !== null ? groupButton(d.group, pausedGroups.has(d.group)) : ""))));
  $("#depth-empty").hidden = s.depth.length > 0;
  $("#paused-groups").replaceChildren(...(groups ? [...pausedGroups].map((g) =>
    h("div", {}, "group ", h("b", {}, g), " paused ", groupButton(g, true))) : []));

  renderPressure(s.pressure, s.breakdown);
  const r = s.resources || {};
  $("#resources").textContent = r.cpu === undefined ? "resource monitoring off" :
    `cpu ${pct(r.cpu)} · disk ${rate(r.disk_read_bps)} read, ${rate(r.disk_write_bps)} write · net ${rate(r.net_rx_bps)} in, ${rate(r.net_tx_bps)} out`;
  $("#hosts tbody").replaceChildren(...s.hosts.map((host) => h("tr", {},
    h("td", {}, host.host_id), h("td", {}, host.task_types.join(", ")),
    h("td", {}, `${host.running} / ${host.capacity}`),
    h("td", {}, host.readings ? pct(host.readings.cpu) : ""))));
}

function groupButton(group, paused) {
  return h("button", {
    type: "button", class: "group-toggle", "data-group": group,
    onclick: () => act(paused ? "api/groups/resume" : "api/groups/pause", { group }),
  }, paused ? "Resume group" : "Pause group");
}

function renderPressure(total, breakdown) {
  const meter = (name, value, cls) => h("div", { class: cls },
    h("span", {}, name), bar(Math.min(1, value), true), h("span", {}, value.toFixed(2)));
  $("#pressure-value").textContent = total.toFixed(2);
  $("#pressure").replaceChildren(meter("overall", total, "meter total"),
    ...breakdown.map(([name, value]) => meter(name, value, "meter")));
}

// -- the event batches -----------------------------------------------------------------------

const TERMINAL = new Set(["completed", "failed", "cancelled", "dead_lettered", "expired", "preempted", "waiting"]);

function describe(e) {
  let text = `${time(e.at)} ${e.type}`;
  if (e.id !== undefined) text += ` #${e.id} ${e.task_type} ${e.label}`;
  if (e.error) text += `: ${e.error}` + (e.will_retry ? " (will retry)" : "");
  if (e.children !== undefined) text += ` (${e.children} children)`;
  return text;
}

function applyBatch(b) {
  const body = $("#running tbody");
  for (const e of b.recent) {
    if (e.id === undefined) continue;
    const row = body.querySelector(`tr[data-task-id="${e.id}"]`);
    if (e.type === "dispatched" && !row) {
      body.append(runningRow({ id: e.id, task_type: e.task_type, label: e.label, percent: 0, started_at: e.at }));
    } else if (TERMINAL.has(e.type) && row) {
      row.remove();
    }
  }
  for (const [id, [percent]] of Object.entries(b.progress)) {
    const row = body.querySelector(`tr[data-task-id="${id}"]`);
    if (row) {
      const el = row.querySelector(".bar");
      el.classList.remove("estimated");
      setBar(el, percent);
    }
  }
  updateRunningCount();
  if (b.resources) renderPressure(b.resources.pressure, b.resources.breakdown);

  const log = $("#events");
  for (const e of b.recent) log.prepend(h("li", { class: `t-${e.type}` }, describe(e)));
  while (log.children.length > MAX_EVENTS) log.lastChild.remove();
  const finished = (b.counts.completed || 0) + (b.counts.failed || 0) + (b.counts.dead_lettered || 0) + (b.counts.cancelled || 0);
  const total = Object.values(b.counts).reduce((a, n) => a + n, 0);
  if (total > b.recent.length) log.prepend(h("li", { class: "muted" }, `… ${total - b.recent.length} more events`));
  const now = Date.now();
  finishedLog.push([now, finished]);
  while (finishedLog.length && finishedLog[0][0] < now - RATE_WINDOW_MS) finishedLog.shift();
  const perSecond = finishedLog.reduce((a, [, n]) => a + n, 0) * 1000 / RATE_WINDOW_MS;
  $("#rate").textContent = `${perSecond.toFixed(perSecond < 10 ? 1 : 0)} finished/s` + (b.missed ? ` · ${b.missed} events missed` : "");
  if (finished && historyOffset === 0 && Date.now() >= historyDue) {
    historyDue = Date.now() + 2000;
    loadHistory();
  }
}

// -- history and task detail -----------------------------------------------------------------

function loadHistory() {
  const q = new URLSearchParams({ limit: PAGE, offset: historyOffset });
  if ($("#f-status").value) q.set("status", $("#f-status").value);
  if ($("#f-type").value.trim()) q.set("type", $("#f-type").value.trim());
  api(`api/history?${q}`).then((data) => {
    $("#history tbody").replaceChildren(...data.rows.map((r) => h("tr", {
      "data-task-id": r.id, "data-history-id": r.history_id, onclick: () => showTask(r.id),
    },
      h("td", {}, r.id), h("td", {}, r.task_type), h("td", {}, r.label), h("td", { class: `t-${r.status}` }, r.status),
      h("td", {}, r.retry_count), h("td", {}, time(r.completed_at)), h("td", {}, took(r.duration_ms)),
      h("td", { class: "error", title: r.last_error || "" }, r.last_error || ""),
      h("td", {}, r.status === "dead_letter" ? h("button", {
        type: "button", class: "retry",
        onclick: (e) => { e.stopPropagation(); act(`api/dead-letters/${r.history_id}/retry`, {}, (o) => { toast(`resubmitted: ${o.kind}${o.id ? " #" + o.id : ""}`); loadHistory(); }); },
      }, "Retry") : ""))));
    $("#newer").disabled = historyOffset === 0;
    $("#older").disabled = data.rows.length < PAGE;
  }).catch((e) => toast(e.message));
}

function showPreview(el, p) {
  el.textContent = p ? p.text + (p.truncated ? `\n… (${p.size} bytes in all)` : "") : "—";
}

function showTask(id) {
  api(`api/tasks/${id}`).then((d) => {
    const t = d.active || d.history;
    $("#detail-title").textContent = `#${id} ${t.task_type} · ${d.active ? d.active.status : d.history.status}`;
    const fields = { label: t.label, priority: t.priority, group: t.group, retries: t.retry_count,
      parent: t.parent_id, created: t.created_at, started: t.started_at,
      finished: d.history && !d.active ? d.history.completed_at : null,
      took: d.history && !d.active ? took(d.history.duration_ms) : null };
    $("#detail-fields").replaceChildren(...Object.entries(fields).filter(([, v]) => v !== null && v !== undefined && v !== "")
      .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    showPreview($("#detail-payload"), d.payload);
    $("#detail-error").textContent = t.last_error || "—";
    showPreview($("#detail-result"), d.result);
    $("#detail-children").replaceChildren(...(d.children.length ? d.children.map((c) =>
      h("li", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); showTask(c.id); } }, `#${c.id} ${c.task_type} ${c.label}`), ` ${c.status}`))
      : [h("li", { class: "muted" }, "no active children")]));
    $("#detail").hidden = false;
  }).catch((e) => toast(e.message));
}

// -- wiring ----------------------------------------------------------------------------------

function connect() {
  const source = new EventSource("api/events");
  source.addEventListener("open", () => { $("#conn").textContent = "live"; });
  source.addEventListener("error", () => {
    $("#conn").textContent = "reconnecting…";
    $("#state").className = "pill down";
  });
  source.addEventListener("state", (m) => { $("#problem").hidden = true; renderState(JSON.parse(m.data)); });
  source.addEventListener("events", (m) => applyBatch(JSON.parse(m.data)));
  source.addEventListener("problem", (m) => {
    const p = $("#problem");
    p.textContent = JSON.parse(m.data).error;
    p.hidden = false;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  if (new URLSearchParams(location.search).has("token")) {
    history.replaceState(null, "", location.pathname);  // the cookie carries it from here on
  }
  $("#pause").addEventListener("click", () => act("api/pause", {}));
  $("#resume").addEventListener("click", () => act("api/resume", {}));
  $("#detail-close").addEventListener("click", () => { $("#detail").hidden = true; });
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); historyOffset = 0; loadHistory(); });
  $("#older").addEventListener("click", () => { historyOffset += PAGE; loadHistory(); });
  $("#newer").addEventListener("click", () => { historyOffset = Math.max(0, historyOffset - PAGE); loadHistory(); });
  connect();
  loadHistory();
});
