// Clinics and their keys (the system key): create a clinic, hand out its first admin key, make and revoke keys.

import { api } from "../api.js";
import { whoami } from "../app.js";
import { busy, fmt, h, replace } from "../dom.js";

function secret(label, key) {
  return h("div", { class: "secret", role: "status" }, h("strong", {}, label),
    h("code", { class: "key", dataset: { secret: "1" } }, key),
    h("span", { class: "muted small" }, "Shown once: copy it now."));
}

export async function keysPanel(clinic, panel) {
  const keys = await api(`/v1/clinics/${clinic.id}/api-keys`);
  const role = h("select", { "aria-label": "role" }, ["annotator", "admin", "predict"].map((r) => h("option", {}, r)));
  const name = h("input", { placeholder: "name, e.g. tracing station 2", "aria-label": "key name" });
  const shown = h("div");
  const make = h("button", { type: "submit" }, "Make key");
  const rows = keys.map((k) => h("tr", {},
    h("td", {}, k.role), h("td", {}, k.name), h("td", {}, h("code", {}, k.prefix)), h("td", {}, fmt.when(k.created_at)),
    h("td", {}, k.revoked_at ? `revoked ${fmt.when(k.revoked_at)}` : h("button", { class: "link", onclick: (e) =>
      busy(e.target, async () => {
        await api(`/v1/api-keys/${k.id}`, { method: "DELETE" });
        await keysPanel(clinic, panel);
      }) }, "Revoke"))));
  replace(panel,
    h("table", {}, h("thead", {}, h("tr", {}, ["role", "name", "prefix", "created", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows)),
    h("form", { class: "inline", onsubmit: (e) => {
      e.preventDefault();
      busy(make, async () => {
        const made = await api(`/v1/clinics/${clinic.id}/api-keys`, { method: "POST",
          json: { role: role.value, name: name.value } });
        await keysPanel(clinic, panel);
        panel.prepend(secret(`New ${made.role} key:`, made.key));
      });
    } }, role, name, make),
    shown);
}

// A clinic admin's own keys.
export async function keysView(main) {
  const panel = h("div", { class: "keys", id: "keys" });
  await keysPanel({ id: whoami().clinic_id }, panel);
  replace(main, h("h1", {}, "API keys"),
    h("p", { class: "muted" }, "Annotator keys upload and annotate studies; admin keys also manage projects, training, " +
      "versions and keys; predict keys only predict (for radiology software)."), panel);
}

export async function clinicsView(main) {
  const clinics = await api("/v1/clinics");
  const name = h("input", { id: "clinic-name", required: true, placeholder: "Riverside Orthodontics",
    "aria-label": "clinic name" });
  const create = h("button", { type: "submit" }, "Create clinic");
  const created = h("div");
  const list = h("div", { class: "stack" }, clinics.map((c) => {
    const panel = h("div", { class: "keys" });
    return h("details", { class: "card" }, h("summary", {}, h("strong", {}, c.name), " ",
      h("span", { class: "muted small" }, `created ${fmt.when(c.created_at)}`)), panel);
  }));
  list.addEventListener("toggle", (e) => {
    const index = [...list.children].indexOf(e.target);
    if (e.target.open && index >= 0) busy(e.target, () => keysPanel(clinics[index], e.target.querySelector(".keys")));
  }, true);
  replace(main, h("h1", {}, "Clinics"),
    h("form", { class: "card inline", onsubmit: (e) => {
      e.preventDefault();
      busy(create, async () => {
        const answer = await api("/v1/clinics", { method: "POST", json: { name: name.value.trim() } });
        await clinicsView(main);
        main.querySelector("h1").after(secret(`Admin key of ${answer.clinic.name}:`, answer.admin_key.key));
      });
    } }, name, create),
    created, list,
    clinics.length ? null : h("p", { class: "muted" }, "No clinic yet: create the first one."));
}
