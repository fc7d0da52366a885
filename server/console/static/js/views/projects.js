// Projects: the clinic's landmark model lines with their active version; admins create new ones.

import { api, schemaOf } from "../api.js";
import { can } from "../app.js";
import { busy, fmt, h, replace } from "../dom.js";

function field(label, input) {
  return h("label", { class: "field" }, h("span", {}, label), input);
}

function select(id, choices, value) {
  return h("select", { id }, choices.map((c) => h("option", { value: c, selected: c === value }, c)));
}

function parseJson(text, what) {
  try {
    return text.trim() ? JSON.parse(text) : {};
  } catch (error) {
    throw new Error(`${what} is not JSON: ${error.message}`);
  }
}

// The gate's overrides: an empty field takes the service's setting.
function gateOf(maxNew, oldTolerance) {
  const gate = {};
  if (maxNew !== "") gate.max_new_mre = Number(maxNew);
  if (oldTolerance !== "") gate.old_tolerance = Number(oldTolerance);
  return gate;
}

async function createForm() {
  const p = (await schemaOf("ProjectIn")).properties;
  const inputs = {
    name: h("input", { id: "project-name", required: true, placeholder: "Lateral ceph" }),
    modality: select("project-modality", p.modality.enum, "cephalometric"),
    backbone: select("project-backbone", p.backbone.enum, p.backbone.default),
    strategy: select("project-strategy", p.strategy.enum, p.strategy.default),
    width: h("input", { id: "project-width", type: "number", value: p.input_width.default, step: 4 }),
    height: h("input", { id: "project-height", type: "number", value: p.input_height.default, step: 4 }),
    local: h("input", { id: "project-local", type: "checkbox", checked: true }),
    localJson: h("textarea", { id: "project-local-json", rows: 2, placeholder: "{} = the defaults" }),
    training: h("textarea", { id: "project-training", rows: 3, placeholder: '{"iterations": 1000}' }),
    maxNew: h("input", { id: "project-gate-new", type: "number", step: "any", min: 0, placeholder: "the service's" }),
    oldTolerance: h("input", { id: "project-gate-old", type: "number", step: "any", min: 0, placeholder: "the service's" }),
  };
  const button = h("button", { type: "submit", id: "create-project" }, "Create project");
  const submit = () => busy(button, async () => {
    const body = {
      name: inputs.name.value.trim(),
      modality: inputs.modality.value,
      backbone: inputs.backbone.value,
      strategy: inputs.strategy.value,
      input_width: Number(inputs.width.value),
      input_height: Number(inputs.height.value),
      local_stage: inputs.local.checked ? parseJson(inputs.localJson.value, "the local stage") : null,
      training: parseJson(inputs.training.value, "the training settings"),
      gate: gateOf(inputs.maxNew.value, inputs.oldTolerance.value),
    };
    const project = await api("/v1/projects", { method: "POST", json: body });
    location.hash = `#/projects/${project.id}`;
  });
  return h("details", { class: "card" }, h("summary", {}, "New project"),
    h("form", { class: "grid-form", onsubmit: (e) => { e.preventDefault(); submit(); } },
      field("Name", inputs.name), field("Modality", inputs.modality), field("Backbone", inputs.backbone),
      field("Strategy", inputs.strategy), field("Input width (px)", inputs.width),
      field("Input height (px)", inputs.height),
      field("Two stages (each landmark refined on a crop at the image's resolution)", inputs.local),
      field("Local stage settings (JSON, optional)", inputs.localJson),
      field("Training settings (JSON, optional)", inputs.training),
      field("Gate: the new landmarks' validation MRE must be under", inputs.maxNew),
      field("Gate: no old step worse than under the parent by more than", inputs.oldTolerance), button));
}

async function activeCell(project) {
  const cell = h("td", { class: "muted" }, "…");
  api(`/v1/projects/${project.id}/versions`).then((history) => {
    const active = history.versions.find((v) => v.id === history.active_version_id);
    if (!active) return replace(cell, "none yet");
    const steps = active.summary.steps.filter((s) => s.mre !== null);
    const last = steps[steps.length - 1];
    cell.classList.remove("muted");
    return replace(cell, `v${active.number} (step ${active.step})`, last ? ` · ${fmt.mm(last.mre, last.unit)}` : "");
  }).catch(() => replace(cell, "–"));
  return cell;
}

export async function projectsView(main) {
  const projects = await api("/v1/projects");
  const rows = await Promise.all(projects.map(async (p) => h("tr", {},
    h("td", {}, h("a", { href: `#/projects/${p.id}` }, p.name)), h("td", {}, p.modality), h("td", {}, p.steps),
    h("td", {}, `${p.backbone} ${p.input_width}×${p.input_height}${p.local_stage ? " + local" : ""}`),
    h("td", {}, p.strategy), await activeCell(p))));
  replace(main, h("h1", {}, "Projects"),
    can("admin") ? await createForm() : null,
    projects.length
      ? h("table", { id: "projects" }, h("thead", {}, h("tr", {},
        ["project", "modality", "steps", "model", "strategy", "active version"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows))
      : h("p", { class: "muted" }, can("admin") ? "No project yet: create the first one." : "No project yet."));
}
