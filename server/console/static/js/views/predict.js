// The predict playground: drop an image, see every landmark of the active version drawn (the service's own
// rendering, labels placed apart), the table with SDR-ready errors, and download JSON, PNG or a DICOM SR.

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

async function run(projectId, file, spacing, out) {
  sessionStorage.setItem(PROJECT, projectId);
  const form = () => {
    const f = new FormData();
    f.append("file", file);
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
  replace(out, h("p", {}, `Version ${prediction.model_version_number} · ${prediction.landmarks.length} landmarks · `,
    `${prediction.width}×${prediction.height} px`, prediction.spacing.x_mm ? ` · ${prediction.spacing.x_mm} mm/px` : " · spacing unknown"),
  h("p", { class: "links" }, links),
  h("img", { src: objectUrl(png), alt: "predicted landmarks", class: "rendered", id: "predict-image" }),
  resultTable(prediction));
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
