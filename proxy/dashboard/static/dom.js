// The dashboard's DOM and formatting helpers. Every value from the server goes into the page as text (textContent,
// attributes), never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f6fde", "#e0832b", "#2e9e5b", "#c8372d", "#8a5cc9", "#1fa5b5", "#b5862b", "#d35fa7",
                 "#5b6b82", "#7bb03a"];
const colors = new Map();
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
export const el = (tag, attrs, ...kids) => build(document.createElement(tag), attrs, kids);
export const svg = (tag, attrs, ...kids) => build(document.createElementNS(SVG_NS, tag), attrs, kids);
export const replace = (id, ...kids) => $(id).replaceChildren(...kids.filter((k) => k));
export const empty = (text) => el("p", { class: "empty", text });

export function table(headers, rows, attrs) {
  const head = el("tr", {}, ...headers.map((h) => el("th", { text: h })));
  return el("table", attrs || {}, el("thead", {}, head), el("tbody", {}, ...rows));
}
// A cell whose raw value the tests (and a curious user's devtools) can read: data-field and data-value.
export const cell = (field, value, text, cls) => el("td", { "data-field": field, "data-value": value ?? "", class: cls, text });

// ---- formatting ----------------------------------------------------------------------------------------------
export const dash = "–";
export const int = (n) => (n === null || n === undefined ? dash : Number(n).toLocaleString("en-US"));
export const pct = (x) => (x === null || x === undefined ? dash : (100 * x).toFixed(1) + "%");
export const num = (x, digits = 2) => (x === null || x === undefined ? dash : Number(x).toFixed(digits));
export function usd(v) {
  if (v === null || v === undefined) return dash;
  if (v === 0) return "$0";
  if (Math.abs(v) >= 1) return "$" + v.toFixed(2);
  return "$" + v.toPrecision(3);
}
export function ms(v) {
  if (v === null || v === undefined) return dash;
  if (v >= 1000) return (v / 1000).toFixed(2) + " s";
  return (v >= 10 ? Math.round(v) : v.toFixed(1)) + " ms";
}
export const ci = (r) => (r && r.ci_low !== null && r.ci_low !== undefined ? `${pct(r.ci_low)}–${pct(r.ci_high)}` : "");
export function clock(t, withDate) {
  const d = new Date(t * 1000);
  const hm = d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", second: withDate ? undefined : "2-digit" });
  return withDate ? d.toLocaleDateString("en-CA") + " " + hm : hm;
}
export function color(model) {
  if (!colors.has(model)) colors.set(model, PALETTE[colors.size % PALETTE.length]);
  return colors.get(model);
}
export const swatch = (model) => {
  const s = el("span", { class: "swatch" });
  s.style.background = color(model);
  return s;
};
// Red (0) through amber to green (1), light enough to read text on.
export const rateColor = (r) => `hsl(${Math.round(120 * r)}, 65%, ${88 - 10 * Math.abs(r - 0.5)}%)`;
