// Small DOM helpers: an element builder, the problem banner, number formats.

// h("button", {class: "x", onclick: f}, "text", child) -> HTMLElement. Attributes starting with "on" become
// listeners; `dataset` sets data- attributes; children may be strings, nodes, arrays, null or false.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "class") el.className = value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Shows an error's detail (a problem document's, for API errors) in the banner; null hides it.
export function showProblem(error) {
  const banner = document.getElementById("problem");
  if (!error) {
    banner.hidden = true;
    return;
  }
  banner.hidden = false;
  replace(banner, h("strong", {}, error.status ? `Error ${error.status}: ` : "Error: "), error.message || String(error),
    h("button", { class: "link", "aria-label": "dismiss", onclick: () => showProblem(null) }, "×"));
}

// Runs `action` with the button disabled; an error goes to the banner. Answers the action's result.
export async function busy(button, action) {
  button.disabled = true;
  try {
    showProblem(null);
    return await action();
  } catch (error) {
    showProblem(error);
    return undefined;
  } finally {
    button.disabled = false;
  }
}

export const fmt = {
  mm: (v, unit = "mm") => (v === null || v === undefined ? "–" : `${v.toFixed(2)} ${unit}`),
  pct: (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`),
  signed: (v) => (v === null || v === undefined ? "–" : `${v > 0 ? "+" : ""}${v.toFixed(2)}`),
  when: (iso) => (iso ? new Date(iso).toLocaleString() : "–"),
  seconds: (s) => {
    if (s === null || s === undefined || !Number.isFinite(s)) return "–";
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  },
};

// An object URL for an image fetched with the key; revoked when the page changes (see app.js).
const urls = [];
export function objectUrl(blob) {
  const url = URL.createObjectURL(blob);
  urls.push(url);
  return url;
}
export function revokeObjectUrls() {
  while (urls.length) URL.revokeObjectURL(urls.pop());
}
