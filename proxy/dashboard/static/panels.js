// The dashboard's panels: each renders one analysis of /v1/dashboard/data into its section, as tables and inline SVG.
import { cell, ci, clock, color, dash, el, empty, int, ms, num, pct, rateColor, replace, svg, swatch, table, usd } from "./dom.js";

function tile(id, label, value, text, sub) {
  return el("div", { class: "tile", id },
    el("div", { class: "label", text: label }),
    el("div", { class: "value", "data-value": value ?? "", text }),
    el("div", { class: "sub", text: sub || "" }));
}

export function renderSummary(a) {
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

export function renderTraffic(series) {
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

export function renderModels(models) {
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

export function renderHeatmap(matrix) {
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

export function renderLatency(report) {
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

export function renderLayers(report) {
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
      if (w > 60) bar.append(svg("text", { x: x + 6, y: 17, class: "on-bar", text: `${l.layer} ${pct(l.share)}` }));
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
  replace("layers", bar, table(["layer", "decided", "share", "asked", "when asked", "confidence", "latency",
    "accuracy"], rows, { id: "layers-table" }), el("p", { class: "note", text: judged }));
}

export function renderConfusion(cm) {
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

export function renderAb(ab) {
  if (!ab) return replace("ab", empty("No decision in this window had an A/B arm (router.ab_test in the config)."));
  const s = ab.sequential;
  const arms = ["control", "treatment"].map((arm) => {
    const a = ab.arms[arm] || {};
    return el("tr", { "data-arm": arm }, el("td", { class: "text", text: arm }), cell("n", a.n, int(a.n)),
      cell("quality", a.quality && a.quality.mean, estimate(a.quality, (v) => num(v, 3))),
      cell("success", a.success && a.success.mean, estimate(a.success, pct)),
      cell("cost", a.cost_usd && a.cost_usd.mean, usd(a.cost_usd && a.cost_usd.mean)),
      cell("latency", a.latency_ms && a.latency_ms.mean, ms(a.latency_ms && a.latency_ms.mean)));
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
    table(["arm", "n", "quality (95% CI)", "success (95% CI)", "mean cost", "mean latency"], arms, { id: "ab-table" }));
}

export function renderLearning(events) {
  if (!events.length) return replace("learning", empty("No promotion, rejection, pin or rollback in this window."));
  const rows = events.slice(0, 20).map((e) => el("tr", { "data-kind": e.kind },
    el("td", { class: "text", text: clock(e.created_at, true) }), el("td", { class: "text", text: e.kind }),
    el("td", { class: "text", text: e.router || dash }), el("td", { class: "text mono", text: e.version || dash }),
    el("td", { class: "text mono", text: e.champion_version || dash }), el("td", { class: "reason", text: e.reason || "" })));
  replace("learning", table(["time", "event", "router", "version", "champion", "reason"], rows, { id: "learning-table" }),
    events.length > 20 ? el("p", { class: "note", text: `and ${events.length - 20} older` }) : null);
}

export function renderRecent(recent, total, selected, open) {
  if (!recent.length) return replace("recent", empty("No decisions in this window."));
  const rows = recent.map((d) => {
    const fallback = d.attempts > 1;
    const tr = el("tr", { class: "clickable" + (d.request_id === selected ? " selected" : ""), tabindex: 0,
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
    tr.addEventListener("click", () => open(d.request_id));
    tr.addEventListener("keydown", (event) => { if (event.key === "Enter") open(d.request_id); });
    return tr;
  });
  replace("recent", table(["time", "request", "asked", "task", "layer", "model", "router", "status", "attempts",
    "latency", "cost", "feedback"], rows, { id: "recent-table" }),
    el("p", { class: "note", text: `the newest ${recent.length} of ${int(total)} in the window` }));
}

