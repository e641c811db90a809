// Talking to the gateway: one fetch wrapper (Ironic version header, CSRF header on writes,
// Ironic-style errors), the session (kept in memory only: the credential is an HttpOnly cookie
// the page never sees; the CSRF token is re-read with GET session after a reload), and the
// event stream with its reconnect policy.

export const IRONIC_VERSION = "1.95";

/** Who is signed in. Never written to localStorage/sessionStorage or a URL. */
export const session = { auth: null, version: null, user: null, role: null, csrf: null, expiresAt: null };

export const canAct = () => Boolean(session.user) && session.role !== "reader";
export const roleReason = () => `your role (${session.role}) may not change nodes`;

/** Called on any 401 outside the session API (set by app.js: go to #/signin). */
let unauthorized = () => {};
export function onUnauthorized(fn) { unauthorized = fn; }

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Ironic's error: {"error_message": "<JSON {faultstring,...}>"}; tolerant of variants. */
function faultOf(body, status, statusText) {
  let msg = body && body.error_message;
  if (typeof msg === "string") {
    try { msg = JSON.parse(msg); } catch { return msg; }
  }
  if (msg && typeof msg === "object" && msg.faultstring) return String(msg.faultstring);
  if (body && typeof body.faultstring === "string") return body.faultstring;
  return `${status} ${statusText || "error"}`;
}

/** api("GET", "/v1/..."), api("PUT", path, body). Resolves the JSON (null for 204). */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (path.startsWith("/v1")) headers["X-OpenStack-Ironic-API-Version"] = IRONIC_VERSION;
  if (method !== "GET" && method !== "HEAD" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `the gateway cannot be reached (${e.message})`);
  }
  const text = await resp.text();
  let json = null;
  if (text) {
    try { json = JSON.parse(text); } catch { json = null; }
  }
  if (resp.ok) return json;
  if (resp.status === 401 && !path.startsWith("/dashboard/api/session")) {
    session.user = null;
    session.csrf = null;
    unauthorized();
  }
  const err = new ApiError(resp.status, faultOf(json, resp.status, resp.statusText));
  throw err;
}

/** A user-facing message for an error of an action. */
export function actionError(e) {
  if (e instanceof ApiError && e.status === 403) return `not allowed for your role: ${e.message}`;
  return e.message || String(e);
}

export async function loadConfig() {
  const c = await api("GET", "/dashboard/api/config");
  session.auth = c.auth;
  session.version = c.version;
  return c;
}

function setSession(doc) {
  session.user = doc.user;
  session.role = doc.role;
  session.csrf = doc.csrf ?? null;
  session.expiresAt = doc.expires_at ?? null;
}

/** GET session: true when signed in (or noauth), false on 401. */
export async function readSession() {
  try {
    setSession(await api("GET", "/dashboard/api/session"));
    return true;
  } catch (e) {
    if (e.status === 401) return false;
    throw e;
  }
}

export async function signIn(credentials) {
  setSession(await api("POST", "/dashboard/api/session", credentials));
}

export async function signOut() {
  try {
    await api("DELETE", "/dashboard/api/session");
  } finally {
    session.user = null;
    session.role = null;
    session.csrf = null;
  }
}

/**
 * Follow a server-sent event stream. The browser's EventSource reconnects by itself with
 * Last-Event-ID; when it gives up (an error status: readyState CLOSED, e.g. a gateway still
 * starting) a new one is made with backoff (1 s doubling to 30 s, reset on open) that resumes
 * from the last event id seen (`?last_event_id=`, since a new EventSource cannot send the
 * header), so no change is missed across a gateway restart. Only when there is no id to resume
 * from, or the server says the resume point is gone (`reset`), is onReset called to re-read.
 * Returns stop().
 */
export function follow(url, { onEvent, onReset, onStatus }) {
  let es = null, timer = null, backoff = 1000, stopped = false, lastId = null;
  const handle = (m) => {
    if (m.lastEventId) lastId = m.lastEventId;
    let doc;
    try { doc = JSON.parse(m.data); } catch { return; }
    if (doc && typeof doc === "object") onEvent(doc);
  };
  function open(fresh) {
    if (stopped) return;
    onStatus("reconnecting…");
    let target = url;
    if (lastId !== null) {
      target += (url.includes("?") ? "&" : "?") + "last_event_id=" + encodeURIComponent(lastId);
      fresh = false;
    }
    es = new EventSource(target);
    es.onopen = () => {
      backoff = 1000;
      onStatus("live");
      if (fresh) { fresh = false; onReset(); }
    };
    es.onmessage = handle;
    es.addEventListener("node", handle);
    // The stream's starting point: a resume point before any change arrives.
    es.addEventListener("ready", (m) => { if (m.lastEventId) lastId = m.lastEventId; });
    es.addEventListener("reset", () => {
      es.close();
      lastId = null;
      onReset();
      open(false); // a new EventSource starts from now (no Last-Event-ID)
    });
    es.onerror = () => {
      if (stopped) return;
      onStatus("reconnecting…");
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        // Signed out or session expired? api() sends the page to sign-in on 401.
        readSession().then((ok) => { if (!ok) unauthorized(); }).catch(() => {});
        timer = setTimeout(() => open(true), backoff);
        backoff = Math.min(backoff * 2, 30000);
      }
    };
  }
  open(false);
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (es) es.close();
  };
}
