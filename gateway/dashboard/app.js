// Ferric's web dashboard: the browser side.
//
// Plain modern JavaScript (ES modules), no framework and no build step, on purpose: one
// vendored dependency (xterm.js for the console) and nothing else, nothing to build, nothing to
// audit but these few files, and it works air-gapped, served as-is from the gateway binary
// (every file under gateway/dashboard/ at /dashboard/<path>; no CDN, ever).
//
// Pieces: api.js (fetch wrapper, session in memory, event stream), dom.js (h() DOM builder that
// only ever uses text nodes and setAttribute, toasts, confirmation dialog, throttling), and one
// module per page under views/. This file is the hash router and the top bar.
// A view is render(main, params, match) -> cleanup function (stops timers, streams, sockets).

import { h, fill } from "./dom.js";
import { session, loadConfig, readSession, signOut, onUnauthorized } from "./api.js";
import { renderSignin } from "./views/signin.js";
import { renderOverview } from "./views/overview.js";
import { renderNodes } from "./views/nodes.js";
import { renderNode } from "./views/node.js";
import { renderConductors } from "./views/conductors.js";
import { renderNotifications } from "./views/notifications.js";

const ROUTES = [
  [/^\/?$/, renderOverview, "Overview"],
  [/^\/nodes$/, renderNodes, "Nodes"],
  [/^\/node\/([^/]+)$/, renderNode, "Node"],
  [/^\/conductors$/, renderConductors, "Conductors"],
  [/^\/notifications$/, renderNotifications, "Notifications"],
  [/^\/signin$/, renderSignin, "Sign in"],
];

const main = document.getElementById("main");
const bar = document.getElementById("topbar");
let cleanup = null;

/** "#/nodes?x=1" -> {path: "/nodes", params: URLSearchParams} */
function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const i = raw.indexOf("?");
  const path = i < 0 ? raw : raw.slice(0, i);
  return { path, params: new URLSearchParams(i < 0 ? "" : raw.slice(i + 1)) };
}

/** Where sign-in sends the user back to: only this page's own routes. */
export function returnTarget(params) {
  const next = params.get("next") || "";
  return /^#\/(?!signin)[\w\-/?=&%.~+]*$/.test(next) ? next : "#/";
}

function goSignin() {
  const here = location.hash || "#/";
  if (parseHash().path === "/signin") return;
  location.hash = "#/signin?next=" + encodeURIComponent(here);
}

function renderBar() {
  const links = [["#/", "Overview"], ["#/nodes", "Nodes"], ["#/conductors", "Conductors"], ["#/notifications", "Notifications"]];
  fill(
    bar,
    h("a", { href: "#/", class: "brand" }, "Ferric"),
    session.user
      ? h("nav", {}, links.map(([href, text]) => h("a", { href }, text)))
      : h("nav", {}),
    h("span", { class: "spacer" }),
    session.user && h("span", { class: "user", "data-testid": "user-badge" }, `${session.user} (${session.role})`),
    session.user && session.auth !== "noauth" &&
      h("button", {
        type: "button", "data-testid": "signout",
        onclick: async () => {
          try { await signOut(); } catch (e) { console.warn(e); }
          renderBar();
          location.hash = "#/signin";
        },
      }, "Sign out"),
  );
  const { path } = parseHash();
  for (const a of bar.querySelectorAll("nav a")) {
    const target = a.getAttribute("href").slice(1);
    a.classList.toggle("current", target === "/" ? path === "/" : path.startsWith(target.replace(/s$/, "")));
  }
}

function route() {
  if (cleanup) { try { cleanup(); } catch (e) { console.warn(e); } cleanup = null; }
  const { path, params } = parseHash();
  if (!session.user && path !== "/signin") { goSignin(); return; }
  if (session.user && path === "/signin") { location.hash = returnTarget(params); return; }
  renderBar();
  for (const [re, view, title] of ROUTES) {
    const m = path.match(re);
    if (m) {
      document.title = `${title} · Ferric`;
      main.replaceChildren();
      cleanup = view(main, params, m, { onSignedIn: () => { renderBar(); location.hash = returnTarget(params); } }) || null;
      return;
    }
  }
  fill(main, h("section", { class: "card" }, h("h2", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Go to the overview"))));
}

async function boot() {
  onUnauthorized(() => { session.user = null; session.csrf = null; renderBar(); goSignin(); });
  try {
    await loadConfig();
    await readSession();
  } catch (e) {
    fill(main, h("section", { class: "card error" }, h("h2", {}, "The gateway cannot be reached"), h("p", {}, e.message)));
    return;
  }
  const v = document.getElementById("version");
  if (v) v.textContent = `Ferric ${session.version || ""}`;
  window.addEventListener("hashchange", route);
  route();
}

boot();
