// Small SVG charts: a line chart of series over x, and a bar chart of signed values (per-landmark change).

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#65a30d", "#db2777"];

// series: {name: [[x, y], ...]} -> an SVG line chart with a legend (y on a linear scale from 0).
export function lineChart(series, { width = 520, height = 200, xLabel = "", yLabel = "" } = {}) {
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": `${yLabel} by ${xLabel}` });
  const points = Object.values(series).flat();
  if (!points.length) return root;
  const pad = { l: 48, r: 10, t: 10, b: 28 };
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]).filter(Number.isFinite);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  const y1 = Math.max(...ys, 1e-9) * 1.05;
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - (y / y1) * (height - pad.t - pad.b);
  root.append(svg("line", { x1: pad.l, y1: Y(0), x2: width - pad.r, y2: Y(0), class: "axis" }),
    svg("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: Y(0), class: "axis" }),
    svg("text", { x: 4, y: pad.t + 8, class: "tick" }, y1.toPrecision(3)),
    svg("text", { x: pad.l, y: height - 6, class: "tick" }, `${x0} ${xLabel}`),
    svg("text", { x: width - pad.r - 40, y: height - 6, class: "tick" }, `${x1}`));
  Object.entries(series).forEach(([name, pts], i) => {
    const d = pts.filter((p) => Number.isFinite(p[1])).map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`);
    root.append(svg("path", { d: d.join(""), fill: "none", stroke: PALETTE[i % PALETTE.length], "stroke-width": 1.5 }),
      svg("text", { x: pad.l + 8 + 90 * i, y: pad.t + 10, fill: PALETTE[i % PALETTE.length], class: "tick" }, name));
  });
  return root;
}

// rows: [{label, value}] signed -> horizontal bars left (negative, better: green) or right (worse: red).
export function changeBars(rows, { width = 520, unit = "mm" } = {}) {
  const bar = 16;
  const height = rows.length * bar + 24;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": `change per landmark in ${unit}` });
  const max = Math.max(...rows.map((r) => Math.abs(r.value)).filter(Number.isFinite), 1e-6);
  const mid = width / 2 + 30;
  const scale = (width / 2 - 80) / max;
  rows.forEach((r, i) => {
    const y = 4 + i * bar;
    root.append(svg("text", { x: 4, y: y + 11, class: "tick" }, r.label));
    if (!Number.isFinite(r.value)) return;
    const w = Math.abs(r.value) * scale;
    root.append(svg("rect", { x: r.value < 0 ? mid - w : mid, y, width: Math.max(w, 1), height: bar - 4,
      class: r.value <= 0 ? "better" : "worse" }),
    svg("text", { x: r.value < 0 ? mid + 4 : mid - 48, y: y + 11, class: "tick" },
      `${r.value > 0 ? "+" : ""}${r.value.toFixed(2)}`));
  });
  root.append(svg("line", { x1: mid, y1: 0, x2: mid, y2: height - 20, class: "axis" }),
    svg("text", { x: mid - 120, y: height - 4, class: "tick" }, `← better (${unit})   worse →`));
  return root;
}
