// autoroute dashboard: renders GET /v1/dashboard/data (the analyses of proxy.analytics) as tables and inline SVG, and a
// decision's routing receipt (GET /v1/decisions/{id}) when its row is clicked. No dependencies, no network but this
// gateway. Every value from the server is put in the page as text (textContent / attributes), never as HTML.
"use strict";

(() => {
  const KEY_STORAGE = "autoroute.dashboard.key";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f6fde", "#e0832b", "#2e9e5b", "#c8372d", "#8a5cc9", "#1fa5b5", "#b5862b", "#d35fa7",
                   "#5b6b82", "#7bb03a"];
  const state = { window: "1h", refreshS: 5, timer: null, busy: false, pending: false, colors: new Map(), receiptId: null };
  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers ---------------------------------------------------------------------------------------------
  function build(node, attrs, kids) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, String(value));
    }
    for (const kid of kids) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }
  const el = (tag, attrs, ...kids) => build(document.createElement(tag), attrs, kids);
  const svg = (tag, attrs, ...kids) => build(document.createElementNS(SVG_NS, tag), attrs, kids);
  const replace = (id, ...kids) => $(id).replaceChildren(...kids.filter((k) => k));
  const empty = (text) => el("p", { class: "empty", text });

  function table(headers, rows, attrs) {
    const head = el("tr", {}, ...headers.map((h) => el("th", { text: h })));
    return el("table", attrs || {}, el("thead", {}, head), el("tbody", {}, ...rows));
  }
  // A cell whose raw value the tests (and a curious user's devtools) can read: data-field and data-value.
  const cell = (field, value, text, cls) => el("td", { "data-field": field, "data-value": value ?? "", class: cls, text });

  // ---- formatting ----------------------------------------------------------------------------------------------
  const dash = "–";
  const int = (n) => (n === null || n === undefined ? dash : Number(n).toLocaleString("en-US"));
  const pct = (x) => (x === null || x === undefined ? dash : (100 * x).toFixed(1) + "%");
  const num = (x, digits = 2) => (x === null || x === undefined ? dash : Number(x).toFixed(digits));
  function usd(v) {
    if (v === null || v === undefined) return dash;
    if (v === 0) return "$0";
    if (Math.abs(v) >= 1) return "$" + v.toFixed(2);
    return "$" + v.toPrecision(3);
  }
  function ms(v) {
    if (v === null || v === undefined) return dash;
    if (v >= 1000) return (v / 1000).toFixed(2) + " s";
    return (v >= 10 ? Math.round(v) : v.toFixed(1)) + " ms";
  }
  const ci = (r) => (r && r.ci_low !== null && r.ci_low !== undefined ? `${pct(r.ci_low)}–${pct(r.ci_high)}` : "");
  function clock(t, withDate) {
    const d = new Date(t * 1000);
    const hm = d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", second: withDate ? undefined : "2-digit" });
    return withDate ? d.toLocaleDateString("en-CA") + " " + hm : hm;
  }
  function color(model) {
    if (!state.colors.has(model)) state.colors.set(model, PALETTE[state.colors.size % PALETTE.length]);
    return state.colors.get(model);
  }
  const swatch = (model) => {
    const s = el("span", { class: "swatch" });
    s.style.background = color(model);
    return s;
  };
  // Red (0) through amber to green (1), light enough to read text on.
  const rateColor = (r) => `hsl(${Math.round(120 * r)}, 65%, ${88 - 10 * Math.abs(r - 0.5)}%)`;

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
    renderRecent(a.recent, a.totals.requests);
  }

  function tile(id, label, value, text, sub) {
    return el("div", { class: "tile", id },
      el("div", { class: "label", text: label }),
      el("div", { class: "value", "data-value": value ?? "", text }),
      el("div", { class: "sub", text: sub || "" }));
  }

  function renderSummary(a) {
    const t = a.totals;
    const note = a.truncated ? "the newest decisions only (window truncated)" : "";
    replace("summary",
      tile("total-requests", "requests", t.requests, int(t.requests), note),
      tile("total-success", "success", t.success.rate, pct(t.success.rate), ci(t.success) && "95% CI " + ci(t.success)),
      tile("total-fallbacks", "fallbacks", t.fallbacks, int(t.fallbacks), "needed a second attempt"),
      tile("total-spend", "spend", t.cost_usd, usd(t.cost_usd), "over the window"),
      tile("total-latency", "latency p50", t.latency_ms.p50, ms(t.latency_ms.p50), "p95 " + ms(t.latency_ms.p95)),
      tile("total-feedback", "feedback", t.scored, int(t.scored),
           `scored · ${int(t.labelled)} task labels` + (t.mean_score === null ? "" : ` · mean ${num(t.mean_score)}`)));
  }

  function renderTraffic(series) {
    const buckets = series.buckets;
    if (!series.requests) return replace("traffic", empty("No requests in this window."));
    const W = 960, H = 230, L = 44, R = 70, T = 10, B = 26;
    const pw = W - L - R, ph = H - T - B;
    const maxReq = Math.max(1, ...buckets.map((b) => b.requests));
    const maxCost = Math.max(...buckets.map((b) => b.cost_usd)) || 1;
    const step = pw / buckets.length, barW = Math.max(1, step * 0.8);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "requests and spend per bucket" });
    for (const f of [0, 0.5, 1]) {
      const y = T + ph * (1 - f);
      chart.append(svg("line", { class: "grid", x1: L, x2: L + pw, y1: y, y2: y }),
        svg("text", { x: L - 6, y: y + 4, "text-anchor": "end", text: int(Math.round(maxReq * f)) }),
        svg("text", { x: L + pw + 6, y: y + 4, text: usd(maxCost * f) }));
    }
    const daily = series.bucket_s >= 86400;
    const every = Math.max(1, Math.ceil(buckets.length / 8));
    const points = [];
    buckets.forEach((b, i) => {
      const x = L + i * step + (step - barW) / 2;
      let y = T + ph;
      for (const [model, count] of Object.entries(b.by_model)) {
        const h = (count / maxReq) * ph;
        y -= h;
        chart.append(svg("rect", { x, y, width: barW, height: h, fill: color(model), "data-model": model,
                                    "data-requests": count, "data-start": b.start },
          svg("title", { text: `${clock(b.start, daily)}: ${count} request(s) served by ${model}` })));
      }
      if (i % every === 0) {
        chart.append(svg("text", { x: L + i * step + step / 2, y: H - 8, "text-anchor": "middle", text: clock(b.start, daily) }));
      }
      points.push([L + i * step + step / 2, T + ph * (1 - b.cost_usd / maxCost), b]);
    });
    chart.append(svg("path", { class: "spend", d: points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("") }));
    for (const [x, y, b] of points) {
      if (b.cost_usd > 0) {
        chart.append(svg("circle", { cx: x, cy: y, r: 2.5, fill: "#1d2330", "data-cost": b.cost_usd },
          svg("title", { text: `${clock(b.start, daily)}: ${usd(b.cost_usd)} spent, ${b.requests} request(s), ${b.failures} failed` })));
      }
    }
    const legend = el("div", { class: "legend" },
      ...[...new Set(buckets.flatMap((b) => Object.keys(b.by_model)))].sort().map((m) => el("span", {}, swatch(m), m)),
      el("span", { text: "— spend per bucket (right axis)" }));
    const caption = el("p", { class: "note", id: "traffic-total", "data-requests": series.requests, "data-cost": series.cost_usd,
      text: `${int(series.requests)} requests and ${usd(series.cost_usd)} in ${buckets.length} buckets of ${series.bucket_s / 60} min` });
    replace("traffic", legend, chart, caption);
  }

  function renderModels(models) {
    if (!models.length) return replace("models", empty("No model was tried in this window."));
    const rows = models.map((m) => el("tr", { "data-model": m.model },
      el("td", { class: "text" }, swatch(m.model), m.model),
      cell("requests", m.requests, int(m.requests)),
      cell("share", m.share, pct(m.share)),
      cell("attempts", m.attempts, int(m.attempts)),
      cell("success", m.success.rate, `${pct(m.success.rate)} ${ci(m.success) && "(" + ci(m.success) + ")"}`),
      cell("p50", m.latency_ms.p50, ms(m.latency_ms.p50)),
      cell("p95", m.latency_ms.p95, ms(m.latency_ms.p95)),
      cell("ttft", m.ttft_ms.p50, ms(m.ttft_ms.p50)),
      cell("spend", m.cost_usd, usd(m.cost_usd)),
      cell("tokens", m.prompt_tokens + m.completion_tokens, int(m.prompt_tokens + m.completion_tokens)),
      cell("score", m.mean_score, m.scored ? `${num(m.mean_score)} (${m.scored})` : dash),
      cell("errors", Object.values(m.errors).reduce((s, n) => s + n, 0),
           Object.entries(m.errors).map(([k, n]) => `${k} ×${n}`).join(", ") || dash, "text")));
    replace("models", table(["model", "requests", "share", "attempts", "attempt success (95% CI)", "p50", "p95",
      "ttft p50", "spend", "tokens", "feedback", "failed attempts"], rows, { id: "models-table" }));
  }

  function renderHeatmap(matrix) {
    if (!matrix.cells.length) return replace("heatmap", empty("No attempts in this window."));
    const byKey = new Map(matrix.cells.map((c) => [c.task + "\u0000" + c.model, c]));
    const rows = matrix.tasks.map((task) => el("tr", {}, el("th", { class: "text", text: task }),
      ...matrix.models.map((model) => {
        const c = byKey.get(task + "\u0000" + model);
        if (!c || !c.success.n) return el("td", { class: "none", text: "·" });
        const r = c.success;
        const td = el("td", { class: "cell", "data-task": task, "data-model": model, "data-successes": r.successes,
                              "data-n": r.n, "data-rate": r.rate },
          el("span", { class: "count", text: `${r.successes}/${r.n}` }),
          el("span", { class: "ci", text: ci(r) }));
        td.style.background = rateColor(r.rate);
        td.title = `${task} × ${model}: ${r.successes} of ${r.n} attempts succeeded (${pct(r.rate)}), 95% Wilson CI ` +
          `${ci(r)}` + (c.scored ? `; mean feedback ${num(c.mean_score)} over ${c.scored}` : "; no feedback score");
        return td;
      })));
    replace("heatmap", table(["task \\ model", ...matrix.models], rows, { class: "heatmap", id: "heatmap-table" }));
  }

  function renderLatency(report) {
    if (!report.models.length) return replace("latency", empty("No successful attempt with a latency in this window."));
    const edges = report.edges_ms;
    const lo = Math.log(edges[0]), hi = Math.log(edges[edges.length - 1]);
    const W = 640, L = 120, R = 10, rowH = 30, T = 4, B = 20;
    const pw = W - L - R, H = T + rowH * report.models.length + B;
    const X = (v) => L + (hi > lo ? ((Math.log(Math.max(v, edges[0])) - lo) / (hi - lo)) * pw : pw / 2);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "latency histograms per model" });
    report.models.forEach((m, i) => {
      const top = T + i * rowH, base = top + rowH - 6, peak = Math.max(1, ...m.counts);
      chart.append(svg("text", { x: L - 8, y: base - 4, "text-anchor": "end", text: m.model }));
      m.counts.forEach((count, j) => {
        if (!count) return;
        const x0 = X(edges[j]), x1 = X(edges[j + 1]), h = (count / peak) * (rowH - 10);
        chart.append(svg("rect", { x: x0, y: base - h, width: Math.max(1, x1 - x0 - 0.5), height: h, fill: color(m.model) },
          svg("title", { text: `${m.model}: ${count} attempt(s) between ${ms(edges[j])} and ${ms(edges[j + 1])}` })));
      });
      for (const q of ["p50", "p95"]) {
        const v = m.latency_ms[q];
        if (v !== null) {
          chart.append(svg("line", { class: "mark", x1: X(v), x2: X(v), y1: top + 2, y2: base },
            svg("title", { text: `${m.model} ${q} ${ms(v)}` })));
        }
      }
    });
    chart.append(svg("text", { x: L, y: H - 4, text: ms(edges[0]) }),
      svg("text", { x: L + pw, y: H - 4, "text-anchor": "end", text: ms(edges[edges.length - 1]) }));
    const rows = report.models.map((m) => el("tr", { "data-model": m.model },
      el("td", { class: "text" }, swatch(m.model), m.model), cell("n", m.latency_ms.n, int(m.latency_ms.n)),
      ...["mean", "p50", "p90", "p95", "p99", "max"].map((q) => cell(q, m.latency_ms[q], ms(m.latency_ms[q])))));
    replace("latency", chart, table(["model", "n", "mean", "p50", "p90", "p95", "p99", "max"], rows, { id: "latency-table" }));
  }

  function renderLayers(report) {
    if (!report.requests) return replace("layers", empty("No classified requests in this window."));
    const W = 640, H = 26;
    const bar = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "share of requests decided per layer" });
    const layerColors = ["#2f6fde", "#1fa5b5", "#8a5cc9", "#e0832b", "#9aa3b2"];
    let x = 0;
    report.layers.forEach((l, i) => {
      const w = (l.share || 0) * W;
      if (w > 0) {
        bar.append(svg("rect", { x, y: 0, width: w, height: H, fill: layerColors[i % layerColors.length] },
          svg("title", { text: `${l.layer}: decided ${l.decided} of ${report.requests} (${pct(l.share)})` })));
        if (w > 60) bar.append(svg("text", { x: x + 6, y: 17, fill: "#fff", text: `${l.layer} ${pct(l.share)}` }));
      }
      x += w;
    });
    const rows = report.layers.map((l) => el("tr", { "data-layer": l.layer },
      el("td", { class: "text", text: l.layer }),
      cell("decided", l.decided, int(l.decided)), cell("share", l.share, pct(l.share)),
      cell("attempts", l.attempts, int(l.attempts)), cell("decide_rate", l.decide_rate, pct(l.decide_rate)),
      cell("confidence", l.mean_confidence, num(l.mean_confidence)),
      cell("latency", l.mean_latency_ms, l.mean_latency_ms === null ? dash : l.mean_latency_ms.toFixed(2) + " ms"),
      cell("accuracy", l.accuracy.rate, l.accuracy.n ? `${pct(l.accuracy.rate)} (${l.accuracy.successes}/${l.accuracy.n})` : dash)));
    const judged = report.judged
      ? `${report.judged} requests with a task label; accuracy ${pct(report.accuracy.rate)} (95% CI ${ci(report.accuracy)})`
      : "No feedback named a request's task: accuracy needs labels.";
    replace("layers", bar, table(["layer", "decided", "share", "asked", "decided when asked", "mean confidence",
      "mean latency", "accuracy"], rows, { id: "layers-table" }), el("p", { class: "note", text: judged }));
  }

  function renderConfusion(cm) {
    if (!cm.n) {
      return replace("confusion", empty("No feedback named a request's task in this window " +
        "(POST /v1/feedback with \"task\")."));
    }
    const peak = Math.max(1, ...cm.counts.flat());
    const rows = cm.labels.map((right, i) => el("tr", {}, el("th", { class: "text", text: right }),
      ...cm.labels.map((classified, j) => {
        const n = cm.counts[i][j];
        const td = el("td", { "data-right": right, "data-classified": classified, "data-count": n,
                              class: i === j ? "diag" : "", text: n || "" });
        if (n) td.style.background = i === j ? `rgba(31,138,76,${0.15 + 0.5 * n / peak})` : `rgba(200,55,45,${0.15 + 0.5 * n / peak})`;
        return td;
      }),
      cell("recall", cm.recall[right], pct(cm.recall[right]))));
    rows.push(el("tr", {}, el("th", { class: "text", text: "precision" }),
      ...cm.labels.map((l) => cell("precision", cm.precision[l], pct(cm.precision[l]))), el("td")));
    replace("confusion", table(["right \\ classified", ...cm.labels, "recall"], rows, { class: "confusion", id: "confusion-table" }),
      el("p", { class: "note", id: "confusion-accuracy", "data-n": cm.n,
                text: `${cm.n} labelled requests; accuracy ${pct(cm.accuracy.rate)} (95% CI ${ci(cm.accuracy)})` }));
  }

  function estimate(e, fmt) {
    if (!e || e.mean === undefined || e.mean === null) return dash;
    return fmt(e.mean) + (e.ci ? ` [${fmt(e.ci[0])}, ${fmt(e.ci[1])}]` : "");
  }

  function renderAb(ab) {
    if (!ab) return replace("ab", empty("No decision in this window had an A/B arm (router.ab_test in the config)."));
    const s = ab.sequential;
    const arms = ["control", "treatment"].map((arm) => {
      const a = ab.arms[arm] || {};
      return el("tr", { "data-arm": arm }, el("td", { class: "text", text: arm }), cell("n", a.n, int(a.n)),
        cell("quality", a.quality && a.quality.mean, estimate(a.quality, (v) => num(v, 3))),
        cell("success", a.success && a.success.mean, estimate(a.success, pct)),
        cell("cost", a.cost_usd && a.cost_usd.mean, estimate(a.cost_usd, usd)),
        cell("latency", a.latency_ms && a.latency_ms.mean, estimate(a.latency_ms, ms)));
    });
    const verdict = s.decision === "continue" ? "Continue: no arm is better yet" : s.decision.replace("stop: ", "Stop: ");
    const p = ab.power || {};
    const facts = [
      ["stopping rule", `${s.test}; stops once the likelihood ratio reaches 1/α = ${num(1 / ab.alpha, 0)}`],
      ["primary metric", `${s.metric} (treatment − control)`],
      ["looks", int(s.looks)],
      ["likelihood ratio", s.likelihood_ratio === null ? dash : num(s.likelihood_ratio, 3)],
      ["always-valid p", num(s.p_value, 4)],
      ["always-valid CI", s.ci ? `[${num(s.ci[0], 4)}, ${num(s.ci[1], 4)}]` : dash],
      ["stopped at event", s.stopped_at_event === null ? "not stopped" : int(s.stopped_at_event)],
      ["detectable now (MDE)", p.mde === null || p.mde === undefined ? dash : num(p.mde, 4)],
      ["more events per arm", p.more_events_per_arm === null || p.more_events_per_arm === undefined ? dash : int(p.more_events_per_arm)],
    ];
    replace("ab",
      el("p", { class: "ab-verdict", id: "ab-decision", "data-decision": s.decision, text: verdict }),
      el("dl", { class: "kv" }, ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
      table(["arm", "n", "quality", "success", "cost", "latency"], arms, { id: "ab-table" }));
  }

  function renderLearning(events) {
    if (!events.length) return replace("learning", empty("No promotion, rejection, pin or rollback in this window."));
    const rows = events.slice(0, 20).map((e) => el("tr", { "data-kind": e.kind },
      el("td", { class: "text", text: clock(e.created_at, true) }), el("td", { class: "text", text: e.kind }),
      el("td", { class: "text", text: e.router || dash }), el("td", { class: "text mono", text: e.version || dash }),
      el("td", { class: "text mono", text: e.champion_version || dash }), el("td", { class: "reason", text: e.reason || "" })));
    replace("learning", table(["time", "event", "router", "version", "champion", "reason"], rows, { id: "learning-table" }),
      events.length > 20 ? el("p", { class: "note", text: `and ${events.length - 20} older` }) : null);
  }

  function renderRecent(recent, total) {
    if (!recent.length) return replace("recent", empty("No decisions in this window."));
    const rows = recent.map((d) => {
      const fallback = d.attempts > 1;
      const tr = el("tr", { class: "clickable" + (d.request_id === state.receiptId ? " selected" : ""), tabindex: 0,
                            "data-request-id": d.request_id, "data-status": d.status },
        el("td", { class: "text", text: clock(d.created_at) }),
        el("td", { class: "text mono", text: d.request_id.slice(0, 14) + "…", title: d.request_id }),
        el("td", { class: "text", text: d.requested_model }),
        el("td", { class: "text", text: d.task || dash }),
        el("td", { class: "text", text: d.layer || dash }),
        el("td", { class: "text", "data-field": "model", text: (fallback && d.routed_model ? d.routed_model + " → " : "") + (d.selected_model || dash) }),
        el("td", { class: "text", text: d.router ? `${d.router} ${d.router_version || ""}` : dash }),
        el("td", { class: "text status-" + d.status, text: d.status || dash }),
        cell("attempts", d.attempts, int(d.attempts)),
        cell("latency", d.latency_ms, ms(d.latency_ms)),
        cell("cost", d.cost_usd, usd(d.cost_usd)),
        cell("score", d.feedback_score, d.feedback_score === null ? dash : num(d.feedback_score)));
      tr.addEventListener("click", () => openReceipt(d.request_id));
      tr.addEventListener("keydown", (event) => { if (event.key === "Enter") openReceipt(d.request_id); });
      return tr;
    });
    replace("recent", table(["time", "request", "asked", "task", "layer", "model", "router", "status", "attempts",
      "latency", "cost", "feedback"], rows, { id: "recent-table" }),
      el("p", { class: "note", text: `the newest ${recent.length} of ${int(total)} in the window` }));
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

  function renderReceipt(r) {
    const c = r.classification, g = r.routing;
    const facts = [
      ["request", r.request_id, "receipt-request-id"],
      ["time", clock(r.created, true)],
      ["asked for", r.requested_model + (r.stream ? " (stream)" : "")],
      ["status", r.status, "receipt-status"],
      ["task", `${c.task || dash} (confidence ${num(c.confidence)}, layer ${c.layer || dash})` +
                (c.needs_clarification ? ", needs clarification" : ""), "receipt-task"],
      ["language", c.language || dash],
      ["router", `${g.router || dash} ${g.router_version || ""} · preference ${g.preference || dash}`],
      ["routed to", g.routed_model || dash, "receipt-routed-model"],
      ["served by", g.selected_model || dash, "receipt-selected-model"],
      ["winner", g.winner ? `utility ${num(g.winner.utility, 4)}, margin ${g.winner.margin === null ? dash : num(g.winner.margin, 4)}` +
                             (g.winner.runner_up ? ` over ${g.winner.runner_up}` : "") : dash],
      ["propensity", g.propensity === null ? dash : num(g.propensity, 3) + (g.explored ? " (explored)" : "")],
      ["A/B arm", g.ab_arm || dash],
      ["reason", g.reason || dash],
    ];
    if (g.counterfactual) facts.push(["other arm", `${g.counterfactual.model} (${g.counterfactual.router || dash})`]);
    if (r.error) facts.push(["error", `${r.error.code || ""} ${r.error.message || ""}`, "receipt-error-code"]);
    const kv = el("dl", { class: "kv" }, ...facts.flatMap(([k, v, id]) => [el("dt", { text: k }), el("dd", { text: v, id })]));
    const candidates = table(["#", "model", "P(success)", "cost", "latency", "utility", "P(chosen)", ""],
      g.candidates.map((x) => el("tr", { "data-model": x.model },
        el("td", { text: x.rank }), el("td", { class: "text", text: x.model }), el("td", { text: num(x.predicted_quality, 3) }),
        el("td", { text: x.predicted_cost === null ? dash : `${x.predicted_cost.toPrecision(3)} ${x.cost_unit === "usd_per_1k_tokens" ? "$/1k tok" : "$"}` }),
        el("td", { text: ms(x.predicted_latency_ms) }), el("td", { text: num(x.utility, 4) }),
        el("td", { text: num(x.choice_probability, 3) }),
        el("td", { class: "text", text: [x.routed && "routed", x.served && "served", x.note].filter(Boolean).join(" · ") }))),
      { id: "receipt-candidates" });
    const attempts = table(["#", "model", "outcome", "latency", "ttft", "tokens in/out", "cost", "error"],
      r.attempts.map((x) => el("tr", { "data-attempt": x.attempt, "data-model": x.model, "data-outcome": x.outcome },
        el("td", { text: x.attempt }), el("td", { class: "text", text: x.model }),
        el("td", { class: "text outcome-" + x.outcome, text: x.outcome }), el("td", { text: ms(x.latency_ms) }),
        el("td", { text: ms(x.ttft_ms) }), el("td", { text: `${x.prompt_tokens ?? dash} / ${x.completion_tokens ?? dash}` }),
        el("td", { text: usd(x.cost_usd) }),
        el("td", { class: "reason", text: x.error_class ? `${x.error_class}: ${x.error_message || ""}` : "" }))),
      { id: "receipt-attempts" });
    const feedback = r.feedback.length
      ? table(["time", "score", "task", "label", "comment"], r.feedback.map((f) => el("tr", {},
          el("td", { class: "text", text: clock(f.created, true) }), el("td", { text: num(f.score) }),
          el("td", { class: "text", text: f.task || dash }), el("td", { class: "text", text: f.label || dash }),
          el("td", { class: "reason", text: f.comment || "" }))), { id: "receipt-feedback" })
      : empty("No feedback for this request.");
    const layers = table(["layer", "task", "confidence", "threshold", "accepted", "ms"],
      c.layers.map((l) => el("tr", {}, el("td", { class: "text", text: l.layer }), el("td", { class: "text", text: l.task || dash }),
        el("td", { text: num(l.confidence, 3) }), el("td", { text: num(l.threshold, 2) }),
        el("td", { text: l.accepted ? "yes" : "no" }), el("td", { text: num(l.latency_ms, 2) }))));
    const raw = el("details", {}, el("summary", { text: "raw JSON" }), el("pre", { text: JSON.stringify(r, null, 2) }));
    replace("receipt-body", kv, el("h3", { text: "Candidates" }), candidates, el("h3", { text: "Attempts" }), attempts,
      el("h3", { text: "Classifier layers" }), layers, el("h3", { text: "Feedback" }), feedback, raw);
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

  document.addEventListener("DOMContentLoaded", start);
})();
