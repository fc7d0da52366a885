// One project: its steps (landmark sets) with annotation progress, its jobs, its active version; admins add
// the next step.

import { api } from "../api.js";
import { can } from "../app.js";
import { busy, fmt, h, replace } from "../dom.js";

// "S Sella" per line -> [{code, name}]; "B <- D L1A" per line -> [{old, new: [a, b]}].
export function parseLandmarks(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean).map((line) => {
    const [code, ...name] = line.split(/\s+/);
    return { code, name: name.join(" ") };
  });
}

export function parseAssociations(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean).map((line) => {
    const match = line.match(/^(\S+)\s*<-\s*(\S+)[\s,]+(\S+)$/);
    if (!match) throw new Error(`an association reads "old <- new1 new2"; got "${line}"`);
    return { old: match[1], new: [match[2], match[3]] };
  });
}

function stepForm(project) {
  const name = h("input", { id: "step-name", placeholder: "dental" });
  const landmarks = h("textarea", { id: "step-landmarks", rows: 6, required: true,
    placeholder: "one per line: code and name\nS Sella\nN Nasion" });
  const associations = h("textarea", { id: "step-associations", rows: 2,
    placeholder: "optional, one per line: old <- new1 new2" });
  const button = h("button", { type: "submit", id: "add-step" }, "Add step");
  return h("details", { class: "card" }, h("summary", {}, `Add step ${project.steps}`),
    h("form", { class: "grid-form", onsubmit: (e) => {
      e.preventDefault();
      busy(button, async () => {
        await api(`/v1/projects/${project.id}/landmark-sets`, { method: "POST", json: {
          name: name.value.trim(), landmarks: parseLandmarks(landmarks.value),
          associations: parseAssociations(associations.value) } });
        location.hash = `#/projects/${project.id}/steps/${project.steps}`;
      });
    } }, h("label", { class: "field" }, h("span", {}, "Name"), name),
    h("label", { class: "field" }, h("span", {}, "Landmarks"), landmarks),
    h("label", { class: "field" }, h("span", {}, "Associations for KA-Net"), associations), button));
}

async function stepRow(project, set) {
  const annotations = await api(`/v1/projects/${project.id}/landmark-sets/${set.step}/annotations`);
  const val = annotations.filter((a) => a.split === "val").length;
  return h("tr", { dataset: { step: set.step } },
    h("td", {}, h("a", { href: `#/projects/${project.id}/steps/${set.step}` }, `Step ${set.step}`), " ", set.name),
    h("td", { class: "codes" }, set.landmarks.map((l) => h("span", { class: "code", title: l.name }, l.code))),
    h("td", {}, `${annotations.length} annotated (${annotations.length - val} train, ${val} val)`),
    h("td", { class: "small" }, set.associations.map((a) => `${a.old} ← ${a.new.join(", ")}`).join("; ") || "auto"));
}

function jobsTable(jobs) {
  if (!jobs.length) return h("p", { class: "muted" }, "No training job yet.");
  return h("table", { id: "jobs" }, h("thead", {}, h("tr", {},
    ["job", "step", "strategy", "status", "submitted"].map((c) => h("th", {}, c)))),
  h("tbody", {}, jobs.map((j) => h("tr", {},
    h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.id.slice(0, 8))), h("td", {}, j.step), h("td", {}, j.strategy),
    h("td", {}, h("span", { class: `status ${j.status}` }, j.status)), h("td", {}, fmt.when(j.created_at))))));
}

function activeSummary(history) {
  const active = history.versions.find((v) => v.id === history.active_version_id);
  if (!active) return h("p", { class: "muted" }, "No active version yet: annotate step 0 and submit its training.");
  return h("p", { id: "active-version" }, "Active: ", h("a", { href: `#/versions/${active.id}` }, `version ${active.number}`),
    ` (step ${active.step}, ${active.strategy}) · `,
    active.summary.steps.map((s) => `step ${s.step} ${fmt.mm(s.mre, s.unit)}`).join(" · "));
}

// What the active version can measure of each cephalometric analysis, and which landmarks the others lack: the
// step a clinic adds next (a landmark some step defines awaits its training; one no step defines needs a step).
function analysesTable(coverage) {
  const lacking = (missing) => {
    const seen = new Map();
    Object.values(missing).flat().forEach((m) => seen.set(m.code, m));
    return [...seen.values()].map((m) => h("span", { class: "code", title: `${m.name}: ${m.step === null
      ? "no step defines it yet" : `defined by step ${m.step}, awaiting its training`}` },
    m.step === null ? m.code : `${m.code} (step ${m.step})`));
  };
  return h("table", { id: "analyses" }, h("thead", {}, h("tr", {},
    ["analysis", "measurable now", "landmarks still missing"].map((c) => h("th", {}, c)))),
  h("tbody", {}, coverage.analyses.map((a) => {
    const total = a.computable.length + Object.keys(a.missing).length;
    return h("tr", { dataset: { analysis: a.analysis } }, h("td", {}, a.name),
      h("td", { title: a.computable.join(", ") }, `${a.computable.length} of ${total}`),
      h("td", { class: "codes" }, lacking(a.missing)));
  })));
}

export async function projectView(main, projectId) {
  const [project, sets, jobs, history] = await Promise.all([
    api(`/v1/projects/${projectId}`), api(`/v1/projects/${projectId}/landmark-sets`),
    api(`/v1/projects/${projectId}/jobs`), api(`/v1/projects/${projectId}/versions`)]);
  const rows = await Promise.all(sets.map((s) => stepRow(project, s)));
  const analyses = project.modality === "cephalometric"
    ? [h("h2", {}, "Cephalometric analyses"), analysesTable(await api(`/v1/projects/${projectId}/analyses`))] : [];
  replace(main, h("nav", { class: "crumbs" }, h("a", { href: "#/projects" }, "Projects"), " / ", project.name),
    h("h1", {}, project.name),
    h("p", { class: "muted" }, `${project.modality} · ${project.backbone} ${project.input_width}×${project.input_height}`,
      project.local_stage ? " + local stage" : " (one stage)", ` · ${project.strategy}`),
    activeSummary(history), h("p", {}, h("a", { href: `#/projects/${projectId}/versions` }, "Version history")),
    ...analyses,
    h("h2", {}, "Steps"),
    rows.length ? h("table", { id: "steps" }, h("thead", {}, h("tr", {},
      ["step", "landmarks", "annotations", "associations"].map((c) => h("th", {}, c)))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No step yet."),
    can("admin") ? stepForm(project) : null,
    h("h2", {}, "Training jobs"), jobsTable(jobs));
}
