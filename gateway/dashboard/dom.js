// DOM helpers. Safety by construction: text only ever goes in through text nodes, attributes
// through setAttribute; event handlers only as functions written here (never strings from
// data); URLs only relative ("#...", "/...") or http(s). Nothing in the dashboard uses innerHTML.

const URL_ATTRS = new Set(["href", "src", "action", "formaction", "xlink:href"]);
const SAFE_URL = /^(#|\/(?!\/)|\.\/|https?:\/\/)/i;

/** h("a", {href: "#/x", "data-testid": "y", onclick: fn}, "text", child, [more]) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError(`h: ${key} must be a function`);
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "value" || key === "checked") {
      el[key] = value; // properties, so inputs show them
    } else {
      const text = value === true ? "" : String(value);
      if (URL_ATTRS.has(key.toLowerCase()) && !SAFE_URL.test(text)) {
        throw new TypeError(`h: refusing ${key}=${JSON.stringify(text)}`);
      }
      el.setAttribute(key, text);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replace an element's children (same argument rules as h). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** "power off" -> "power-off": for data-testid and class names. */
export const slug = (s) => String(s ?? "none").trim().replace(/\s+/g, "-");

/** A short, readable timestamp (local time); "" for null. */
export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

export const shortId = (uuid) => (uuid ? String(uuid).slice(0, 8) : "");

/** A transient notice (data-testid toast); errors stay longer. */
export function toast(message, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div", { id: "toasts", "aria-live": "polite" });
    document.body.appendChild(box);
  }
  const t = h("div", { class: `toast toast-${kind}`, "data-testid": "toast", role: kind === "error" ? "alert" : "status" }, message);
  box.appendChild(t);
  while (box.childElementCount > 5) box.firstElementChild.remove();
  setTimeout(() => t.remove(), kind === "error" ? 10000 : 5000);
}

/**
 * A modal confirmation. opts: {title, message, reasonLabel?, checkboxLabel?}.
 * Resolves {reason, checked} on Confirm, null on Cancel or Escape.
 */
export function confirmDialog({ title, message, reasonLabel, checkboxLabel }) {
  return new Promise((resolve) => {
    const reason = reasonLabel
      ? h("input", { type: "text", "data-testid": "confirm-reason", maxlength: "255", autocomplete: "off" })
      : null;
    const check = checkboxLabel ? h("input", { type: "checkbox", "data-testid": "confirm-checkbox" }) : null;
    let result = null;
    if (reason) reason.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); dlg.querySelector("[data-testid=confirm-ok]").click(); } });
    const dlg = h(
      "dialog",
      { "data-testid": "confirm-dialog", class: "confirm" },
      h("h3", {}, title),
      h("p", {}, message),
      reason && h("label", {}, reasonLabel, " ", reason),
      check && h("label", { class: "check" }, check, " ", checkboxLabel),
      h(
        "div",
        { class: "buttons" },
        h("button", { type: "button", "data-testid": "confirm-cancel", onclick: () => dlg.close() }, "Cancel"),
        h("button", {
          type: "button", class: "primary", "data-testid": "confirm-ok",
          onclick: () => { result = { reason: reason ? reason.value : null, checked: check ? check.checked : false }; dlg.close(); },
        }, "Confirm"),
      ),
    );
    dlg.addEventListener("close", () => { dlg.remove(); resolve(result); });
    document.body.appendChild(dlg);
    dlg.showModal();
    (reason || dlg.querySelector("[data-testid=confirm-cancel]")).focus();
  });
}

/**
 * Run task at most once per gapMs, never two at a time; kicks while waiting or running
 * coalesce into one more run. kick.stop() ends it.
 */
export function coalesce(task, gapMs) {
  let last = 0, timer = null, running = false, again = false, stopped = false;
  async function run() {
    timer = null;
    running = true;
    last = Date.now();
    try { await task(); } catch (e) { console.warn(e); }
    running = false;
    if (again) { again = false; kick(); }
  }
  function kick() {
    if (stopped || timer) return;
    if (running) { again = true; return; }
    timer = setTimeout(run, Math.max(0, last + gapMs - Date.now()));
  }
  kick.stop = () => { stopped = true; clearTimeout(timer); };
  return kick;
}
