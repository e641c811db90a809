// Sign-in: POST /dashboard/api/session; the gateway answers with an HttpOnly cookie and the CSRF
// token, which stays in memory (api.js). The form posts nowhere by itself (method=post, so even
// without this script the fields never end up in a URL).

import { h, fill } from "../dom.js";
import { session, signIn } from "../api.js";

export function renderSignin(main, _params, _m, ctx) {
  if (session.auth === "noauth") {
    fill(main, h("section", { class: "card narrow" }, h("h2", {}, "No sign-in needed"),
      h("p", {}, "This gateway runs without authentication. ", h("a", { href: "#/" }, "Open the overview"))));
    return null;
  }
  const keystone = session.auth === "keystone";
  let mode = session.auth === "token" ? "token" : "password";
  const error = h("p", { class: "error", "data-testid": "signin-error", role: "alert", hidden: true });
  const fields = h("div", { class: "fields" });
  const input = (testid, label, attrs) => {
    const el = h("input", { "data-testid": testid, name: testid, ...attrs });
    return [el, h("label", {}, h("span", {}, label), el)];
  };
  const [user, userRow] = input("signin-user", "User", { type: "text", autocomplete: "username", required: true });
  const [password, passwordRow] = input("signin-password", "Password", { type: "password", autocomplete: "current-password", required: true });
  const [token, tokenRow] = input("signin-token", "Token", { type: "password", autocomplete: "off", required: true });
  const [project, projectRow] = input("signin-project", "Project", { type: "text", required: true });
  const [domain, domainRow] = input("signin-domain", "Domain", { type: "text", value: "Default", required: true });

  function showFields() {
    if (mode === "token") fill(fields, tokenRow);
    else if (keystone) fill(fields, userRow, passwordRow, projectRow, domainRow);
    else fill(fields, userRow, passwordRow);
    for (const b of main.querySelectorAll(".tabs button")) b.classList.toggle("current", b.dataset.mode === mode);
  }

  const submit = h("button", { type: "submit", class: "primary", "data-testid": "signin-submit" }, "Sign in");
  const form = h(
    "form",
    {
      method: "post", class: "card narrow", "data-testid": "signin-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        error.hidden = true;
        submit.disabled = true;
        let body;
        if (mode === "token") body = { token: token.value };
        else if (keystone) body = { username: user.value, password: password.value, project: project.value, domain: domain.value || "Default" };
        else body = { username: user.value, password: password.value };
        try {
          await signIn(body);
          password.value = "";
          token.value = "";
          ctx.onSignedIn();
        } catch (e) {
          error.textContent = e.message;
          error.hidden = false;
          password.value = "";
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h2", {}, "Sign in to Ferric"),
    keystone && h("div", { class: "tabs", role: "tablist" },
      [["password", "Password"], ["token", "Token"]].map(([m, label]) =>
        h("button", { type: "button", role: "tab", "data-mode": m, "data-testid": `signin-mode-${m}`, onclick: () => { mode = m; showFields(); } }, label))),
    fields,
    error,
    submit,
  );
  main.appendChild(form);
  showFields();
  (mode === "token" ? token : user).focus();
  return null;
}
