// autoroute dashboard: polls GET /v1/dashboard/data (the analyses of proxy.analytics) and renders it through
// panels.js; a clicked decision opens its routing receipt (GET /v1/decisions/{id}). No dependencies, no network but
// this gateway. The client key, when the gateway asks for one, lives in this tab's sessionStorage only.
import { clock, color, el, replace } from "./dom.js";
import { renderAb, renderConfusion, renderHeatmap, renderLatency, renderLayers, renderLearning, renderModels,
         renderRecent, renderSummary, renderTraffic } from "./panels.js";
import { renderReceipt } from "./receipt.js";

const KEY_STORAGE = "autoroute.dashboard.key";
const state = { window: "1h", refreshS: 5, timer: null, busy: false, pending: false, receiptId: null };
const $ = (id) => document.getElementById(id);

// ---- data ----------------------------------------------------------------------------------------------------
async function api(path) {
  const headers = { accept: "application/json" };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.authorization = "Bearer " + key;
  const response = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.error && body.error.message) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function setStatus(kind, text) {
  const status = $("status");
  status.dataset.state = kind;
  status.textContent = text;
}

function askForKey(reason) {
  $("key-reason").textContent = reason;
  $("key-form").hidden = false;
  $("key-input").focus();
}

async function refresh() {
  if (state.busy) { state.pending = true; return; }  // asked again meanwhile (a key, a window): once more after
  state.busy = true;
  clearTimeout(state.timer);
  let again = true;
  try {
    const data = await api("/v1/dashboard/data?window=" + encodeURIComponent(state.window));
    state.refreshS = data.refresh_s || state.refreshS;
    render(data);
    setStatus("ok", "updated " + clock(data.generated_at));
  } catch (error) {
    if (error.status === 401) {
      again = false;  // no point asking again until a key is given
      const had = sessionStorage.getItem(KEY_STORAGE);
      askForKey(had ? "The gateway refused this key; give another." : "This gateway asks for a client API key.");
      setStatus("unauthorized", "needs an API key");
    } else {
      setStatus("error", error.message);
    }
  } finally {
    state.busy = false;
    if (state.pending) {
      state.pending = false;
      state.timer = setTimeout(refresh, 0);
    } else if (again && $("live").checked) {
      state.timer = setTimeout(refresh, state.refreshS * 1000);
    }
  }
}

// ---- sections ------------------------------------------------------------------------------------------------
function render(data) {
  const a = data.analysis;
  for (const m of a.models) color(m.model);
  renderSummary(a);
  renderTraffic(a.traffic);
  renderModels(a.models);
  renderHeatmap(a.success);
  renderLatency(a.latency);
  renderLayers(a.layers);
  renderConfusion(a.confusion);
  renderAb(a.ab);
  renderLearning(a.learning_events);
  renderRecent(a.recent, a.totals.requests, state.receiptId, openReceipt);
}

// ---- the receipt ---------------------------------------------------------------------------------------------
async function openReceipt(requestId) {
  state.receiptId = requestId;
  for (const tr of document.querySelectorAll("#recent-table tr[data-request-id]")) {
    tr.classList.toggle("selected", tr.dataset.requestId === requestId);
  }
  $("receipt").hidden = false;
  $("receipt").dataset.requestId = requestId;
  replace("receipt-body", el("p", { class: "note", text: "loading " + requestId + "…" }));
  try {
    const receipt = await api("/v1/decisions/" + encodeURIComponent(requestId));
    if (state.receiptId === requestId) renderReceipt(receipt);
  } catch (error) {
    if (error.status === 401) askForKey("The receipt needs a client API key.");
    replace("receipt-body", el("p", { class: "empty", id: "receipt-error", text: error.message }));
  }
}

// ---- wiring --------------------------------------------------------------------------------------------------
function start() {
  $("window").addEventListener("change", (event) => { state.window = event.target.value; refresh(); });
  $("live").addEventListener("change", () => { if ($("live").checked) refresh(); else clearTimeout(state.timer); });
  $("key-button").addEventListener("click", () => askForKey("Give a client API key of this gateway."));
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    $("key-input").value = "";
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    $("key-form").hidden = true;
    refresh();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    $("key-input").value = "";
    refresh();
  });
  $("receipt-close").addEventListener("click", () => { $("receipt").hidden = true; state.receiptId = null; });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") $("receipt-close").click(); });
  state.window = $("window").value;
  refresh();
}

start();  // a module runs once the document is parsed

