// Model versions: the lineage as a tree, and one version's review: its step, strategy, triplets and gate
// decision; MRE and SDR per step and per landmark against its parent; promote and roll back with a reason;
// the audit events; predicted against annotated points on the validation studies.

import { api, apiBlob, predictStudy } from "../api.js";
import { can } from "../app.js";
import { busy, fmt, h, objectUrl, replace } from "../dom.js";
import { changeBars } from "../chart.js";

function lastMre(v) {
  const s = v.summary.steps.filter((x) => x.mre !== null);
  return s.length ? `${fmt.mm(s[s.length - 1].mre, s[s.length - 1].unit)} (step ${s[s.length - 1].step})` : "–";
}

function treeNode(v, children, activeId) {
  return h("li", {}, h("a", { href: `#/versions/${v.id}` }, `v${v.number}`),
    ` step ${v.step} · ${v.strategy} · `, h("span", { class: `status ${v.status}` }, v.status),
    v.id === activeId ? h("strong", {}, " (active)") : null, ` · ${lastMre(v)} · `,
    h("span", { class: "muted small" }, v.reason),
    (children[v.id] || []).length ? h("ul", {}, children[v.id].map((c) => treeNode(c, children, activeId))) : null);
}

export async function versionsView(main, projectId) {
  const [project, history] = await Promise.all([api(`/v1/projects/${projectId}`),
    api(`/v1/projects/${projectId}/versions`)]);
  const children = {};
  for (const v of history.versions) (children[v.parent_id || "root"] ||= []).push(v);
  replace(main, h("nav", { class: "crumbs" }, h("a", { href: "#/projects" }, "Projects"), " / ",
    h("a", { href: `#/projects/${projectId}` }, project.name), " / versions"),
  h("h1", {}, "Version history"),
  history.versions.length
    ? h("ul", { class: "tree", id: "version-tree" }, (children.root || []).map((v) => treeNode(v, children, history.active_version_id)))
    : h("p", { class: "muted" }, "No version yet."));
}

function stepTable(report) {
  const unit = report.steps?.[0]?.unit || "mm";
  return h("table", { id: "step-table" }, h("thead", {}, h("tr", {},
    ["step", "studies", "MRE", "SD", `SDR 2 ${unit}`, `SDR 4 ${unit}`, "parent MRE", "change"].map((c) => h("th", {}, c)))),
  h("tbody", {}, (report.steps || []).map((s) => h("tr", {},
    h("td", {}, s.step), h("td", {}, s.n_studies), h("td", {}, fmt.mm(s.mre, s.unit)), h("td", {}, fmt.mm(s.sd, s.unit)),
    h("td", {}, fmt.pct(s.sdr?.["2.0"])), h("td", {}, fmt.pct(s.sdr?.["4.0"])), h("td", {}, fmt.mm(s.parent_mre, s.unit)),
    h("td", { class: s.change > 0 ? "worse" : "better" }, fmt.signed(s.change))))));
}

// Per landmark: this version's validation MRE minus its parent's, over the landmarks both report.
export function landmarkChanges(report, parentReport) {
  const parent = {};
  for (const s of parentReport?.steps || []) Object.assign(parent, s.landmarks || {});
  const rows = [];
  for (const s of report.steps || []) {
    for (const [code, m] of Object.entries(s.landmarks || {})) {
      if (parent[code] && m.mre !== null && parent[code].mre !== null) {
        rows.push({ label: `${code} (step ${s.step})`, value: m.mre - parent[code].mre });
      }
    }
  }
  return rows;
}

function landmarkTable(report) {
  const rows = (report.steps || []).flatMap((s) => Object.entries(s.landmarks || {}).map(([code, m]) => h("tr", {},
    h("td", {}, code), h("td", {}, s.step), h("td", {}, fmt.mm(m.mre, s.unit)), h("td", {}, fmt.pct(m.sdr?.["2.0"])))));
  return h("table", { id: "landmark-table" }, h("thead", {}, h("tr", {},
    ["landmark", "step", "MRE", "SDR 2 mm or px"].map((c) => h("th", {}, c)))), h("tbody", {}, rows));
}

function decisionForm(version, reload) {
  const action = version.decision;  // the server's rule: rollback, promote, or none for the active version
  if (!can("admin") || !action) return null;
  const reason = h("input", { id: "decision-reason", required: true, placeholder: "why (required, kept in the audit)",
    size: 50 });
  const button = h("button", { type: "submit", id: `version-${action}` }, action === "rollback" ? "Roll back to this version" : "Promote");
  return h("form", { class: "card inline", onsubmit: (e) => {
    e.preventDefault();
    busy(button, async () => {
      await api(`/v1/versions/${version.id}/${action}`, { method: "POST", json: { reason: reason.value.trim() } });
      await reload();
    });
  } }, reason, button);
}

function triplets(version) {
  const r = version.hyperparameters?.train_report || {};
  if (!r.triplets?.length) return "none (no KA-Net in this step)";
  return `${r.triplets.map((t) => `${t[0]} ← ${t[1]}, ${t[2]}`).join("; ")} (${r.triplet_source || "automatic"})`;
}

export async function versionView(main, versionId) {
  const reload = () => versionView(main, versionId);
  const version = await api(`/v1/versions/${versionId}`);
  const parent = version.parent_id ? await api(`/v1/versions/${version.parent_id}`) : null;
  const changes = landmarkChanges(version.report, parent?.report);
  replace(main, h("nav", { class: "crumbs" }, h("a", { href: `#/projects/${version.project_id}` }, "Project"), " / ",
    h("a", { href: `#/projects/${version.project_id}/versions` }, "versions"), ` / v${version.number}`),
  h("h1", {}, `Version ${version.number} `, h("span", { class: `status ${version.status}`, id: "version-status" }, version.status)),
  h("p", {}, `Step ${version.step} · ${version.strategy} · parent `,
    parent ? h("a", { href: `#/versions/${parent.id}` }, `v${parent.number}`) : "none", ` · ${fmt.when(version.created_at)}`),
  h("p", { id: "gate-reason" }, h("strong", {}, "Gate: "), version.reason),
  h("p", {}, h("strong", {}, "KA-Net triplets: "), triplets(version)),
  decisionForm(version, reload),
  h("h2", {}, "Validation per step"), stepTable(version.report),
  changes.length ? [h("h2", {}, `Per landmark against v${parent.number}`), changeBars(changes)] : null,
  h("details", {}, h("summary", {}, "Per landmark"), landmarkTable(version.report)),
  h("h2", {}, "Audit events"),
  h("ul", { id: "events" }, version.events.map((e) => h("li", {}, `${fmt.when(e.created_at)} · `,
    h("strong", {}, e.action), ` by ${e.actor}: ${e.reason}`))),
  h("h2", {}, "Validation studies"), await validationViewer(version));
}

async function validationViewer(version) {
  const sets = await api(`/v1/projects/${version.project_id}/landmark-sets`);
  const known = sets.filter((s) => s.step <= version.step);
  const lists = await Promise.all(known.map((s) => api(`/v1/projects/${version.project_id}/landmark-sets/${s.step}/annotations`)));
  const val = lists.flatMap((list, i) => list.filter((a) => a.split === "val").map((a) => ({ ...a, step: known[i].step })));
  const panel = h("div", { id: "validation-panel" });
  if (!val.length) return h("p", { class: "muted" }, "No validation study.");
  return h("div", {}, h("ul", { class: "inline-list" }, val.map((a) => h("li", {}, h("button", { class: "link",
    onclick: (e) => busy(e.target, () => showValidation(version, a, panel)) }, `step ${a.step} · ${a.study_id.slice(0, 8)}`)))),
  panel);
}

async function showValidation(version, annotation, panel) {
  const [study, blob] = await Promise.all([api(`/v1/studies/${annotation.study_id}`),
    apiBlob(`/v1/studies/${annotation.study_id}/image`)]);
  const prediction = await predictStudy(version.project_id, study, blob, version.id);
  const byCode = Object.fromEntries(prediction.landmarks.map((l) => [l.code, l]));
  const sx = study.spacing.x_mm || 1;
  const sy = study.spacing.y_mm || 1;
  const unit = study.spacing.x_mm ? "mm" : "px";
  const rows = annotation.points.filter((p) => byCode[p.code]).map((p) => {
    const q = byCode[p.code];
    return { code: p.code, truth: p, pred: q, error: Math.hypot((q.x - p.x) * sx, (q.y - p.y) * sy) };
  });
  const image = h("img", { src: objectUrl(blob), alt: "validation study" });
  const overlay = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  overlay.setAttribute("class", "points");
  overlay.setAttribute("viewBox", `-0.5 -0.5 ${study.width} ${study.height}`);
  overlay.innerHTML = rows.map((r) => `<line x1="${r.truth.x}" y1="${r.truth.y}" x2="${r.pred.x}" y2="${r.pred.y}" class="err"/>` +
    `<circle cx="${r.truth.x}" cy="${r.truth.y}" r="${study.width / 200}" class="truth"/>` +
    `<circle cx="${r.pred.x}" cy="${r.pred.y}" r="${study.width / 200}" class="pred"/>`).join("");
  replace(panel, h("p", { class: "small" }, h("span", { class: "truth-key" }, "● annotated"), " ",
    h("span", { class: "pred-key" }, "● predicted"), ` by v${prediction.model_version_number}`),
  h("div", { class: "overlay-wrap" }, image, overlay),
  h("table", {}, h("thead", {}, h("tr", {}, ["landmark", "error", "stage"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, r.code), h("td", {}, `${r.error.toFixed(2)} ${unit}`),
      h("td", {}, r.pred.stage))))));
}
