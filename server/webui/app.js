// The chat page of `vkmtp serve`. It uses only the public API (/props, /slots, /metrics, /v1/chat/completions
// with stream: true), keeps conversations in localStorage and shows each reply's speed and MTP acceptance
// from the final stream chunk's `timings`. Model text reaches the DOM only as text nodes (markdown.js).

import { renderMarkdown } from "./markdown.js";
import { drawChart } from "./chart.js";

const $ = (id) => document.getElementById(id);
const KEYS = { chats: "vkmtp.chats", current: "vkmtp.current", settings: "vkmtp.settings", apiKey: "vkmtp.apiKey" };
const SAMPLING = ["temperature", "top_p", "max_tokens", "seed"];

function load(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}
const save = (key, value) => localStorage.setItem(key, JSON.stringify(value));

let chats = load(KEYS.chats, []);
let currentId = load(KEYS.current, null);
let settings = { system: "", ...load(KEYS.settings, {}) };
let apiKey = localStorage.getItem(KEYS.apiKey) || "";
let busy = null; // {controller} while a request streams

const current = () => chats.find((c) => c.id === currentId);
const saveChats = () => { save(KEYS.chats, chats); save(KEYS.current, currentId); };

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, onClick, title) {
  const b = el("button", null, text);
  b.type = "button";
  if (title) b.title = title;
  b.addEventListener("click", onClick);
  return b;
}

// ---- one render per animation frame while streaming --------------------------------------------------------------
const dirty = new Map();
function schedule(key, fn) {
  if (!dirty.size) requestAnimationFrame(flush);
  dirty.set(key, fn);
}
function flush() {
  const jobs = [...dirty.values()];
  dirty.clear();
  for (const fn of jobs) fn();
}

// ---- the API -------------------------------------------------------------------------------------------------------
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const res = await fetch(path, { ...options, headers });
  if (res.status === 401) askForKey("The server needs an API key (its --api-key).");
  return res;
}

async function errorText(res) {
  try {
    const body = await res.json();
    return `${res.status}: ${body.error?.message ?? JSON.stringify(body)}`;
  } catch {
    return `HTTP ${res.status}`;
  }
}

function askForKey(message) {
  $("key-bar").hidden = false;
  $("key-msg").textContent = message;
  $("api-key").value = apiKey;
}

const fmt = (x, digits = 1) => (typeof x === "number" && isFinite(x) ? x.toFixed(digits) : "–");

// quant type from the GGUF file name (…-Q4_K_M.gguf), the way llama.cpp names its files
function quantOf(path) {
  const m = /(?:^|[-_.])((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32)(?=\.gguf$|[-_.])/i.exec((path || "").split("/").pop());
  return m ? m[1].toUpperCase() : null;
}

let props = null;
async function loadProps() {
  let res;
  try {
    res = await api("/props");
  } catch {
    $("model").textContent = "server unreachable; retrying…";
    setTimeout(loadProps, 2000);
    return;
  }
  if (res.status === 503) {
    $("model").textContent = "loading model…";
    setTimeout(loadProps, 1000);
    return;
  }
  if (!res.ok) {
    $("model").textContent = res.status === 401 ? "API key needed" : await errorText(res);
    return;
  }
  props = await res.json();
  const params = props.default_generation_settings?.params || {};
  const quant = quantOf(props.model_path);
  $("model").textContent = props.model_alias || props.model_path || "model";
  $("model").title = props.model_path || "";
  const parts = [];
  if (quant) parts.push(quant);
  parts.push(`ctx ${props.default_generation_settings?.n_ctx ?? "?"}`);
  parts.push(`${props.total_slots} slot${props.total_slots === 1 ? "" : "s"}`);
  const mtp = String(params["speculative.types"] || "").includes("mtp");
  parts.push(mtp ? `MTP on, draft ≤ ${params["speculative.n_max"]}` : "MTP off");
  if (props.build_info) parts.push(props.build_info);
  $("server-info").textContent = parts.join(" · ");
  $("mtp-info").textContent = mtp
    ? `MTP is on for this server: up to ${params["speculative.n_max"]} draft tokens per step` +
      (params["speculative.p_min"] ? `, p-min ${params["speculative.p_min"]}` : "") +
      ". It is a server setting (--no-mtp, --spec-draft-n-max); requests cannot change it."
    : "MTP is off for this server (--no-mtp, or the model has no MTP head).";
  for (const name of ["temperature", "top_p"]) {
    if (params[name] != null) $(name).placeholder = `server: ${params[name]}`;
  }
  $("max_tokens").placeholder = `server: ${params.n_predict ?? -1}`;
  refreshLoad();
}

// busy slots from /slots and engine memory from /metrics (after each reply, not on a timer)
async function refreshLoad() {
  try {
    const [slots, metrics] = await Promise.all([api("/slots"), api("/metrics")]);
    const parts = [];
    if (slots.ok) {
      const list = await slots.json();
      parts.push(`busy ${list.filter((s) => s.is_processing).length}/${list.length}`);
    }
    if (metrics.ok) {
      const m = /^vkmtp:engine_allocated_bytes\s+(\S+)/m.exec(await metrics.text());
      if (m) parts.push(`engine ${fmt(Number(m[1]) / 2 ** 20, 0)} MiB`);
    }
    $("slot-info").textContent = parts.join(" · ");
  } catch {
    /* the header is informative only */
  }
}

// ---- settings ------------------------------------------------------------------------------------------------------
function bindSettings() {
  $("system").value = settings.system || "";
  for (const name of SAMPLING) $(name).value = settings[name] ?? "";
  for (const name of ["system", ...SAMPLING]) {
    $(name).addEventListener("change", () => {
      settings[name] = $(name).value;
      save(KEYS.settings, settings);
    });
  }
}

function samplingFields() {
  const out = {};
  for (const name of SAMPLING) {
    const raw = String(settings[name] ?? "").trim();
    if (raw === "") continue;
    const value = Number(raw);
    if (!isFinite(value)) continue;
    out[name] = name === "max_tokens" || name === "seed" ? Math.trunc(value) : value;
  }
  return out;
}

// ---- replies ------------------------------------------------------------------------------------------------------
// A reply that opens with <think>…</think> shows the thinking folded, like reasoning_content.
function splitThinking(msg) {
  let reasoning = msg.reasoning || "";
  let answer = msg.content || "";
  const m = /^\s*<think>([\s\S]*?)(?:<\/think>\s*|$)/.exec(answer);
  if (m) {
    reasoning += m[1];
    answer = answer.slice(m[0].length);
  }
  return { reasoning, answer };
}

function statsText(t) {
  if (!t) return "";
  const parts = [
    `prompt ${fmt(t.prompt_per_second)} tok/s`,
    `decode ${fmt(t.predicted_per_second)} tok/s`,
    `${t.predicted_n} tokens`,
  ];
  if (t.draft_n) {
    // each step emits its accepted drafts plus one token of its own: steps = predicted_n - draft_n_accepted
    const steps = t.predicted_n - t.draft_n_accepted;
    parts.push(`MTP drafted ${t.draft_n} / accepted ${t.draft_n_accepted} (${fmt((100 * t.draft_n_accepted) / t.draft_n, 0)}%)`);
    if (steps > 0) parts.push(`${fmt(t.predicted_n / steps, 2)} tok/step`);
  } else {
    parts.push("MTP: no drafts");
  }
  parts.push(`${t.cache_n ?? 0} prompt tokens cached`);
  return parts.join(" · ");
}

function fillBody(body, msg) {
  const { reasoning, answer } = splitThinking(msg);
  body.replaceChildren();
  if (reasoning) {
    const fold = el("details", "reasoning");
    fold.append(el("summary", null, "Reasoning"), renderMarkdown(reasoning));
    body.append(fold);
  }
  body.append(renderMarkdown(answer));
  if (!answer && !reasoning && !msg.status) body.append(el("span", "cursor", "…"));
}

function messageNode(msg, index, chat) {
  const node = el("div", `msg ${msg.role}`);
  node.dataset.index = index;
  const body = el("div", "body");
  if (msg.role === "assistant") fillBody(body, msg);
  else body.textContent = msg.content;
  node.append(body);
  if (msg.status) node.append(el("div", "status", msg.status));
  if (msg.timings) node.append(el("div", "stats", statsText(msg.timings)));
  if (msg.compare) node.append(compareNode(msg));
  const last = index === chat.messages.length - 1;
  const lastUser = msg.role === "user" && chat.messages.slice(index + 1).every((m) => m.role !== "user");
  if (!busy && (lastUser || (last && msg.role === "assistant"))) {
    const actions = el("div", "actions");
    if (lastUser) actions.append(button("Edit", () => editLast(index), "edit this message and send it again"));
    if (last && msg.role === "assistant") {
      actions.append(button("Regenerate", regenerate, "drop this reply and generate a new one"));
      actions.append(button("Compare", compare,
        "re-run this reply and show both speeds side by side (MTP is a server setting, so both runs use it)"));
    }
    node.append(actions);
  }
  return node;
}

function compareNode(msg) {
  const box = el("div", "compare");
  const column = (title, run) => {
    const col = el("div", "run");
    col.append(el("div", "run-title", title));
    col.append(el("div", "speed", run.timings ? `${fmt(run.timings.predicted_per_second)} tok/s` : run.status || "…"));
    if (run.timings) col.append(el("div", "stats", statsText(run.timings)));
    return col;
  };
  box.append(column("this reply", msg), column("re-run", msg.compare));
  box.append(el("div", "note wide", "Same request again: MTP is a server setting (--no-mtp), so both runs use it."));
  const text = el("details", "rerun-text");
  text.append(el("summary", null, "re-run text"));
  const body = el("div", "body");
  fillBody(body, msg.compare);
  text.append(body);
  box.append(text);
  return box;
}

function renderMessages() {
  const box = $("messages");
  const chat = current();
  box.replaceChildren();
  if (!chat || !chat.messages.length) {
    box.append(el("p", "note", "Ask something. Replies stream in; each shows its speed and MTP acceptance."));
  } else {
    chat.messages.forEach((m, i) => box.append(messageNode(m, i, chat)));
  }
  box.scrollTop = box.scrollHeight;
  renderChart();
}

function renderChats() {
  const list = $("chats");
  list.replaceChildren();
  for (const chat of [...chats].reverse()) {
    const item = el("li", chat.id === currentId ? "active" : null);
    item.append(button(chat.title || "New chat", () => {
      if (busy) return;
      currentId = chat.id;
      saveChats();
      renderAll();
    }));
    list.append(item);
  }
}

function renderChart() {
  const chat = current();
  const points = (chat ? chat.messages : [])
    .filter((m) => m.role === "assistant" && m.timings)
    .map((m) => ({
      speed: m.timings.predicted_per_second,
      acceptance: m.timings.draft_n ? m.timings.draft_n_accepted / m.timings.draft_n : null,
    }));
  drawChart($("chart"), points);
}

function renderAll() {
  renderChats();
  renderMessages();
}

function setBusy(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
}

// ---- streaming -----------------------------------------------------------------------------------------------------
function wireMessages(history) {
  const out = [];
  if ((settings.system || "").trim()) out.push({ role: "system", content: settings.system });
  for (const m of history) out.push({ role: m.role, content: m.content });
  return out;
}

// Streams one reply for `history` into `target` ({content, reasoning, timings, status}); `onUpdate` runs after
// each event (it should only schedule work).
function begin() {
  busy = { controller: new AbortController() };
  setBusy(true);
}

async function stream(history, target, onUpdate) {
  const { controller } = busy;
  const body = {
    messages: wireMessages(history),
    stream: true,
    stream_options: { include_usage: true },
    ...samplingFields(),
  };
  try {
    const res = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!res.ok) throw new Error(await errorText(res));
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const obj = JSON.parse(data);
          if (obj.error) throw new Error(obj.error.message);
          const delta = obj.choices?.[0]?.delta;
          if (delta?.content) target.content += delta.content;
          if (delta?.reasoning_content) target.reasoning = (target.reasoning || "") + delta.reasoning_content;
          if (obj.timings) target.timings = obj.timings;
          if (obj.choices?.[0]?.finish_reason) target.finish_reason = obj.choices[0].finish_reason;
        }
        onUpdate();
      }
    }
  } catch (err) {
    target.status = err.name === "AbortError" ? "stopped" : `error: ${err.message}`;
  } finally {
    busy = null;
    setBusy(false);
  }
}

async function reply(chat) {
  const msg = { role: "assistant", content: "" };
  const history = chat.messages.slice();
  chat.messages.push(msg);
  saveChats();
  begin();
  renderMessages();
  const box = $("messages");
  const node = box.lastElementChild;
  const body = node.querySelector(".body");
  await stream(history, msg, () =>
    schedule("reply", () => {
      const follow = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
      fillBody(body, msg);
      if (follow) box.scrollTop = box.scrollHeight;
    }),
  );
  dirty.delete("reply");
  saveChats();
  renderMessages();
  refreshLoad();
}

function newChat() {
  const chat = { id: `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`, title: "", created: Date.now(), messages: [] };
  chats.push(chat);
  currentId = chat.id;
  saveChats();
  return chat;
}

async function send(text) {
  if (busy || !text.trim()) return;
  const chat = current() || newChat();
  chat.messages.push({ role: "user", content: text });
  if (!chat.title) chat.title = text.trim().slice(0, 40);
  $("input").value = "";
  renderChats();
  await reply(chat);
}

function editLast(index) {
  const chat = current();
  if (busy || !chat) return;
  $("input").value = chat.messages[index].content;
  chat.messages.splice(index);
  saveChats();
  renderMessages();
  $("input").focus();
}

async function regenerate() {
  const chat = current();
  if (busy || !chat || chat.messages.at(-1)?.role !== "assistant") return;
  chat.messages.pop();
  await reply(chat);
}

async function compare() {
  const chat = current();
  const msg = chat?.messages.at(-1);
  if (busy || msg?.role !== "assistant") return;
  msg.compare = { content: "" };
  begin();
  renderMessages();
  const node = $("messages").lastElementChild;
  await stream(chat.messages.slice(0, -1), msg.compare, () =>
    schedule("compare", () => node.querySelector(".compare").replaceWith(compareNode(msg))),
  );
  dirty.delete("compare");
  saveChats();
  renderMessages();
  refreshLoad();
}

function exportChat() {
  const chat = current();
  if (!chat) return;
  const blob = new Blob([JSON.stringify({ ...chat, system: settings.system, model: props?.model_alias }, null, 2)], { type: "application/json" });
  const a = el("a");
  a.href = URL.createObjectURL(blob);
  a.download = `vkmtp-chat-${chat.id}.json`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function deleteChat() {
  if (busy || !current()) return;
  chats = chats.filter((c) => c.id !== currentId);
  currentId = chats.at(-1)?.id ?? null;
  saveChats();
  renderAll();
}

// ---- start-up: paint from localStorage at once, then ask the server -------------------------------------------------
function start() {
  bindSettings();
  if (!current()) currentId = chats.at(-1)?.id ?? null;
  renderAll();
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send($("input").value);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send($("input").value);
    }
  });
  $("stop").addEventListener("click", () => busy?.controller.abort());
  $("new-chat").addEventListener("click", () => {
    if (busy) return;
    if (current()?.messages.length !== 0) newChat();
    renderAll();
    $("input").focus();
  });
  $("delete-chat").addEventListener("click", deleteChat);
  $("export-chat").addEventListener("click", exportChat);
  $("key-bar").addEventListener("submit", (e) => {
    e.preventDefault();
    apiKey = $("api-key").value.trim();
    localStorage.setItem(KEYS.apiKey, apiKey);
    $("key-bar").hidden = true;
    loadProps();
  });
  window.addEventListener("resize", renderChart);
  loadProps();
}

start();
