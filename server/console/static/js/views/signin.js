// Sign-in with an API key: kept in this tab's session storage until sign-out or the tab closes.

import { signIn } from "../app.js";
import { busy, h } from "../dom.js";

export function signinView() {
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true,
    placeholder: "kamp_…", "aria-label": "API key", size: 60 });
  const button = h("button", { type: "submit", id: "sign-in" }, "Sign in");
  const form = h("form", { class: "card narrow", onsubmit: (e) => {
    e.preventDefault();
    busy(button, () => signIn(input.value.trim()));
  } },
  h("h1", {}, "Sign in"),
  h("p", {}, "Paste the API key your clinic's admin gave you. The first start of ",
    h("code", {}, "kamp serve"), " prints the system key, which creates clinics."),
  h("label", { for: "api-key" }, "API key"), input, button,
  h("p", { class: "muted small" }, "The key stays in this browser tab only and is forgotten when the tab closes."));
  return form;
}
