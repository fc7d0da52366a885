// The predict playground: drop an image, see every landmark of the active version drawn (the service's own
// rendering, labels placed apart, over an analysis' lines when one is chosen), the landmarks' table, the
// cephalometric measurements with their ranges, norms and classes, and download JSON, PNG or a DICOM SR.

import { api, apiBlob } from "../api.js";
import { can } from "../app.js";
import { busy, h, objectUrl, replace } from "../dom.js";

const PROJECT = "kamp.predictProject";

async function projectPicker() {
  if (can("admin", "annotator")) {
    const projects = await api("/v1/projects");
    const saved = sessionStorage.getItem(PROJECT);
    return h("select", { id: "predict-project", "aria-label": "project" },
      projects.map((p) => h("option", { value: p.id, selected: p.id === saved }, p.name)));
  }
  // A predict key may not list projects: its integrator knows the project's id.
  return h("input", { id: "predict-project", placeholder: "project id", size: 40, value: sessionStorage.getItem(PROJECT) || "",
    "aria-label": "project id" });
}

function download(blob, name) {
  return h("a", { href: objectUrl(blob), download: name, class: "button" }, `Download ${name}`);
}

function resultTable(prediction) {
  return h("table", { id: "predict-table" }, h("thead", {}, h("tr", {},
    ["landmark", "x (px)", "y (px)", "x (mm)", "y (mm)", "confidence", "stage"].map((c) => h("th", {}, c)))),
  h("tbody", {}, prediction.landmarks.map((l) => h("tr", {}, h("td", { title: l.name }, l.code),
    h("td", {}, l.x.toFixed(1)), h("td", {}, l.y.toFixed(1)), h("td", {}, l.x_mm?.toFixed(2) ?? "–"),
    h("td", {}, l.y_mm?.toFixed(2) ?? "–"), h("td", {}, `${Math.round(100 * l.confidence)}%`), h("td", {}, l.stage)))));
}

const UNITS = { deg: "°", mm: " mm", "%": "%", ratio: "" };

function number(value, unit) {
  return `${value.toFixed(unit === "ratio" ? 2 : 1)}${UNITS[unit] ?? ""}`;
}

function measurementTable(prediction) {
  const omitted = prediction.measurements_omitted || [];
  const why = omitted.length ? h("details", { id: "predict-omitted" }, h("summary", {}, `${omitted.length} not measured`),
    h("ul", {}, omitted.map((o) => h("li", {}, `${o.analysis} ${o.code}: ${o.reason}`)))) : "";
  if (!prediction.measurements?.length) {
    return h("div", {}, h("p", { class: "muted" }, "No cephalometric measurement: the model lacks their landmarks."), why);
  }
  return h("div", {}, h("table", { id: "predict-measurements" }, h("thead", {}, h("tr", {},
    ["analysis", "measurement", "value", "plausible range", "norm", "deviation", "class"].map((c) => h("th", {}, c)))),
  h("tbody", {}, prediction.measurements.map((m) => h("tr", {}, h("td", {}, m.analysis), h("td", { title: m.name }, m.code),
    h("td", {}, number(m.value, m.unit)),
    h("td", {}, m.low === null ? "–" : `${number(m.low, m.unit)} – ${number(m.high, m.unit)}`),
    h("td", {}, m.norm_mean === null ? "–" : `${m.norm_mean} ± ${m.norm_sd}`),
    h("td", {}, m.deviation_sd === null ? "–" : `${m.deviation_sd > 0 ? "+" : ""}${m.deviation_sd.toFixed(1)} SD`),
    h("td", {}, m.class_name ?? "–"))))), why);
}

function analysisPicker(prediction, redraw) {
  const names = [...new Set((prediction.measurements || []).map((m) => m.analysis))];
  if (!names.length) return "";
  const select = h("select", { id: "predict-analysis", "aria-label": "analysis to draw" },
    h("option", { value: "" }, "landmarks only"), names.map((n) => h("option", { value: n }, n)));
  select.addEventListener("change", () => busy(select, () => redraw(select.value)));
  return h("label", {}, "Draw analysis ", select);
}

async function run(projectId, file, spacing, out) {
  sessionStorage.setItem(PROJECT, projectId);
  const form = (analysis) => {
    const f = new FormData();
    f.append("file", file);
    if (analysis) f.append("analysis", analysis);
    if (spacing) {
      f.append("spacing_x_mm", spacing);
      f.append("spacing_y_mm", spacing);
    }
    return f;
  };
  const base = `/v1/projects/${encodeURIComponent(projectId)}/predict`;
  const [prediction, png] = await Promise.all([api(base, { method: "POST", form: form() }),
    apiBlob(`${base}/render`, { method: "POST", form: form() })]);
  const json = new Blob([JSON.stringify(prediction, null, 2)], { type: "application/json" });
  const links = [download(json, "landmarks.json"), download(png, "landmarks.png")];
  if (/\.dcm$/i.test(file.name) || file.type === "application/dicom") {
    links.push(download(await apiBlob(`${base}/sr`, { method: "POST", form: form() }), "landmarks-sr.dcm"));
  }
  const image = h("img", { src: objectUrl(png), alt: "predicted landmarks", class: "rendered", id: "predict-image" });
  const redraw = async (analysis) => {
    image.src = objectUrl(await apiBlob(`${base}/render`, { method: "POST", form: form(analysis) }));
  };
  replace(out, h("p", {}, `Version ${prediction.model_version_number} · ${prediction.landmarks.length} landmarks · `,
    `${prediction.width}×${prediction.height} px`, prediction.spacing.x_mm ? ` · ${prediction.spacing.x_mm} mm/px` : " · spacing unknown"),
  h("p", { class: "links" }, links, " ", analysisPicker(prediction, redraw)),
  image, measurementTable(prediction), resultTable(prediction));
}

export async function predictView(main) {
  const project = await projectPicker();
  const spacing = h("input", { id: "predict-spacing", type: "number", step: "any", min: 0, placeholder: "mm/px",
    "aria-label": "pixel spacing in mm (optional)" });
  const input = h("input", { type: "file", id: "predict-file", "aria-label": "image to predict",
    accept: ".dcm,.png,.jpg,.jpeg,.bmp,.tif,.tiff,application/dicom,image/*" });
  const out = h("div", { id: "predict-out" });
  const go = h("button", { id: "predict-run" }, "Predict");
  const start = (file) => file && busy(go, () => run(project.value.trim(), file, spacing.value, out));
  go.addEventListener("click", () => start(input.files[0]));
  input.addEventListener("change", () => start(input.files[0]));
  const zone = h("div", { class: "drop", id: "predict-drop" }, h("p", {}, "Drop an image here, or choose one: ", input),
    h("label", {}, "Project ", project), " ", h("label", {}, "Pixel spacing (optional) ", spacing), " ", go,
    h("p", { class: "small muted" }, "Nothing of the image is stored."));
  zone.addEventListener("dragover", (e) => e.preventDefault());
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    start(e.dataTransfer.files[0]);
  });
  replace(main, h("h1", {}, "Predict"), zone, out);
}
