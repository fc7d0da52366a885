// One step: its studies as a grid of thumbnails (this step's, with their train/val role, and the clinic's
// studies no step of the project uses yet), uploads by drag and drop, and the submission of its training.

import { api, apiBlob, schemaOf, upload } from "../api.js";
import { can } from "../app.js";
import { busy, h, objectUrl, replace } from "../dom.js";

export async function allStudies() {
  const out = [];
  for (let offset = 0; ; offset += 1000) {
    const page = await api(`/v1/studies?limit=1000&offset=${offset}`);
    out.push(...page);
    if (page.length < 1000) return out;
  }
}

// {studyId: {step, split, points}} of every step of the project (the current annotation of each).
export async function annotationsByStudy(projectId, sets) {
  const byStudy = {};
  const lists = await Promise.all(sets.map((s) => api(`/v1/projects/${projectId}/landmark-sets/${s.step}/annotations`)));
  lists.forEach((list, i) => list.forEach((a) => {
    (byStudy[a.study_id] ||= {})[sets[i].step] = a;
  }));
  return byStudy;
}

function thumbnail(study, href, badge) {
  const img = h("img", { alt: `study ${study.id.slice(0, 8)}`, width: 160, height: 160, loading: "lazy" });
  apiBlob(`/v1/studies/${study.id}/thumbnail?size=192`).then((b) => { img.src = objectUrl(b); }).catch(() => {});
  return h("a", { class: "thumb", href, dataset: { study: study.id } }, img,
    h("span", { class: "caption" }, `${study.width}×${study.height}`, badge));
}

function dropZone(onDone) {
  const list = h("ul", { class: "uploads" });
  const input = h("input", { type: "file", multiple: true, id: "upload-input", "aria-label": "images to upload",
    accept: ".dcm,.png,.jpg,.jpeg,.bmp,.tif,.tiff,.mha,.nrrd,.nii,.gz,application/dicom,image/*" });
  const spacing = h("input", { id: "upload-spacing", type: "number", step: "any", min: 0, placeholder: "mm/px",
    "aria-label": "pixel spacing in mm (optional)" });
  const send = async (files) => {
    await Promise.all([...files].map(async (file) => {
      const bar = h("progress", { max: 1, value: 0 });
      const state = h("span", { class: "small" }, "uploading");
      list.append(h("li", {}, file.name, " ", bar, " ", state));
      const form = new FormData();
      form.append("file", file);
      if (spacing.value) {
        form.append("spacing_x_mm", spacing.value);
        form.append("spacing_y_mm", spacing.value);
      }
      try {
        const study = await upload("/v1/studies", form, (f) => { bar.value = f; });
        bar.value = 1;
        replace(state, study.created ? "stored" : "already stored");
      } catch (error) {
        state.classList.add("error");
        replace(state, error.message);
      }
    }));
    onDone();
  };
  input.addEventListener("change", () => send(input.files));
  const zone = h("div", { class: "drop", id: "drop-zone" },
    h("p", {}, "Drop DICOM, PNG or JPEG images here, or ", h("label", { class: "link", for: "upload-input" }, "choose files"),
      ". DICOM is de-identified on arrival; file names are not stored."),
    h("label", {}, "Pixel spacing for files without one (optional) ", spacing), input, list);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    send(e.dataTransfer.files);
  });
  return zone;
}

async function submitForm(project, step) {
  const spec = (await schemaOf("ProjectIn")).properties.strategy.enum;
  const strategy = h("select", { id: "submit-strategy" }, spec.map((s) => h("option", { selected: s === project.strategy }, s)));
  const reason = h("input", { id: "submit-reason", placeholder: "why (kept in the job's log)" });
  const button = h("button", { type: "submit", id: "submit-training" }, `Train step ${step}`);
  return h("form", { class: "card inline", onsubmit: (e) => {
    e.preventDefault();
    busy(button, async () => {
      const job = await api(`/v1/projects/${project.id}/landmark-sets/${step}/submit`, { method: "POST",
        json: { strategy: strategy.value, reason: reason.value } });
      location.hash = `#/jobs/${job.id}`;
    });
  } }, h("strong", {}, "Training"), strategy, reason, button);
}

async function fillGrids(projectId, sets, step, annotated, unassigned) {
  const [studies, byStudy] = await Promise.all([allStudies(), annotationsByStudy(projectId, sets)]);
  const href = (s) => `#/projects/${projectId}/steps/${step}/studies/${s.id}`;
  const here = studies.filter((s) => byStudy[s.id]?.[step]);
  const free = studies.filter((s) => !byStudy[s.id]);
  replace(annotated.heading, `Annotated in this step (${here.length})`);
  replace(annotated.grid, here.map((s) => thumbnail(s, href(s),
    h("span", { class: `badge ${byStudy[s.id][step].split}` }, byStudy[s.id][step].split))));
  replace(unassigned.heading, `Not yet in any step (${free.length})`);
  replace(unassigned.grid, free.map((s) => thumbnail(s, href(s), h("span", { class: "badge" }, "new"))));
}

export async function stepView(main, projectId, stepText) {
  const step = Number(stepText);
  const [project, sets] = await Promise.all([api(`/v1/projects/${projectId}`),
    api(`/v1/projects/${projectId}/landmark-sets`)]);
  const set = sets.find((s) => s.step === step);
  if (!set) throw new Error(`this project has no step ${step}`);
  const annotated = { heading: h("h2"), grid: h("div", { class: "grid", id: "annotated" }) };
  const unassigned = { heading: h("h2"), grid: h("div", { class: "grid", id: "unassigned" }) };
  const refresh = () => fillGrids(projectId, sets, step, annotated, unassigned);
  await refresh();
  replace(main, h("nav", { class: "crumbs" }, h("a", { href: "#/projects" }, "Projects"), " / ",
    h("a", { href: `#/projects/${projectId}` }, project.name), ` / step ${step}`),
  h("h1", {}, `Step ${step}${set.name ? ` · ${set.name}` : ""}`),
  h("p", { class: "codes" }, set.landmarks.map((l) => h("span", { class: "code", title: l.name }, l.code))),
  can("admin") ? await submitForm(project, step) : null,
  annotated.heading, annotated.grid, unassigned.heading, unassigned.grid, dropZone(refresh));
}
