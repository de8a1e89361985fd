// A routing receipt (GET /v1/decisions/{id}) rendered into the side panel.
import { clock, dash, el, empty, ms, num, replace, table, usd } from "./dom.js";

export function renderReceipt(r) {
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
      el("td", { class: "reason", text: [x.routed && "routed", x.served && "served", x.note].filter(Boolean).join(" · ") }))),
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

