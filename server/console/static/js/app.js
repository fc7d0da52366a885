// The console's shell: sign-in, the navigation the key's role allows, and a hash router over the views.

import { api, session } from "./api.js";
import { h, replace, revokeObjectUrls, showProblem } from "./dom.js";
import { clinicsView, keysView } from "./views/clinics.js";
import { editorView } from "./views/editor.js";
import { jobView } from "./views/job.js";
import { predictView } from "./views/predict.js";
import { projectView } from "./views/project.js";
import { projectsView } from "./views/projects.js";
import { signinView } from "./views/signin.js";
import { stepView } from "./views/step.js";
import { versionView, versionsView } from "./views/versions.js";

const CLINIC = ["admin", "annotator"];
// pattern, view, roles that may open it
const ROUTES = [
  [/^#\/clinics$/, clinicsView, ["system"]],
  [/^#\/keys$/, keysView, ["admin"]],
  [/^#\/projects$/, projectsView, CLINIC],
  [/^#\/projects\/([\w-]+)$/, projectView, CLINIC],
  [/^#\/projects\/([\w-]+)\/steps\/(\d+)$/, stepView, CLINIC],
  [/^#\/projects\/([\w-]+)\/steps\/(\d+)\/studies\/([\w-]+)$/, editorView, CLINIC],
  [/^#\/projects\/([\w-]+)\/versions$/, versionsView, CLINIC],
  [/^#\/versions\/([\w-]+)$/, versionView, CLINIC],
  [/^#\/jobs\/([\w-]+)$/, jobView, CLINIC],
  [/^#\/predict$/, predictView, ["admin", "annotator", "predict"]],
];
const HOME = { system: "#/clinics", admin: "#/projects", annotator: "#/projects", predict: "#/predict" };
const NAV = [
  ["#/clinics", "Clinics", ["system"]],
  ["#/projects", "Projects", CLINIC],
  ["#/predict", "Predict", ["admin", "annotator", "predict"]],
  ["#/keys", "Keys", ["admin"]],
];

let me = null; // the signed-in key: {key_id, clinic_id, role, name}
let leave = null; // the current view's clean-up (timers, listeners)
let shown = 0; // the latest route() call: an older one still loading must not draw over it

export function whoami() {
  return me;
}

export function can(...roles) {
  return me !== null && roles.includes(me.role);
}

export async function signIn(key) {
  session.set(key);
  try {
    me = await api("/v1/whoami");
  } catch (error) {
    session.clear();
    me = null;
    throw error;
  }
  if (location.hash === HOME[me.role]) await route();
  else location.hash = HOME[me.role]; // the hashchange routes
}

function signOut() {
  session.clear();
  me = null;
  if (location.hash === "#/signin") route();
  else location.hash = "#/signin";
}

function renderBar() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  if (!me) {
    replace(nav);
    replace(who);
    return;
  }
  replace(nav, NAV.filter(([, , roles]) => roles.includes(me.role)).map(([href, label]) =>
    h("a", { href, class: location.hash.startsWith(href) ? "current" : "" }, label)));
  replace(who, h("span", { class: "role", dataset: { role: me.role } }, me.role), ` ${me.name || ""} `,
    h("button", { class: "link", onclick: signOut }, "Sign out"));
}

async function route() {
  const mine = ++shown;
  if (leave) leave();
  leave = null;
  revokeObjectUrls();
  const main = document.getElementById("main");
  if (!me && session.key()) {
    try {
      me = await api("/v1/whoami");
    } catch (error) {
      session.clear();
      showProblem(error);
    }
  }
  renderBar();
  if (!me) {
    replace(main, signinView());
    return;
  }
  const hash = location.hash || HOME[me.role];
  for (const [pattern, view, roles] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    if (!roles.includes(me.role)) break;
    // Each call draws into its own element: one that a newer call has replaced draws where no one sees it.
    const target = h("div", { class: "view" }, h("p", { class: "muted" }, "Loading…"));
    replace(main, target);
    try {
      const cleanUp = (await view(target, ...match.slice(1))) || null;
      if (mine !== shown) {
        if (cleanUp) cleanUp();
        return;
      }
      leave = cleanUp;
    } catch (error) {
      if (mine !== shown) return;
      showProblem(error);
      replace(target, h("p", { class: "muted" }, "This page could not be shown."));
    }
    return;
  }
  location.hash = HOME[me.role];
}

window.addEventListener("hashchange", () => {
  showProblem(null);
  route();
});
window.addEventListener("DOMContentLoaded", route);
