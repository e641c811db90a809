// A node's serial console: xterm.js on the gateway's console websocket
// (/v1/nodes/<uuid>/console/ws). The session cookie authenticates the upgrade; the CSRF token
// goes as a second subprotocol ("ferric.csrf.<token>") so another site cannot open it with the
// cookie. Output and keystrokes are binary frames; text frames are JSON control messages
// (hello, state, writer, reconnecting, reconnected). The gateway itself fails over to the node's
// new owner; when the socket closes anyway (not by us), this retries with backoff 1 s .. 30 s.

import { Terminal } from "../vendor/xterm/xterm.mjs";
import { h } from "../dom.js";
import { session } from "../api.js";

export function consolePanel(uuid) {
  const status = h("span", { class: "badge", "data-testid": "console-status" }, "disconnected");
  const detail = h("span", { class: "muted", "data-testid": "console-session" });
  const screen = h("div", { class: "terminal", "data-testid": "console-terminal" });
  const connectBtn = h("button", { type: "button", "data-testid": "console-connect", onclick: () => connect() }, "Connect");
  const disconnectBtn = h("button", { type: "button", "data-testid": "console-disconnect", disabled: true, onclick: () => disconnect() }, "Disconnect");
  const el = h("div", { class: "console" }, h("div", { class: "toolbar" }, connectBtn, disconnectBtn, status, detail), screen);

  let term = null, ws = null, retry = null, backoff = 1000, wanted = false, writer = true, conductor = null;
  const encoder = new TextEncoder();

  const setStatus = (text, kind) => {
    status.textContent = text;
    status.className = `badge ${kind || ""}`;
  };

  function ensureTerminal() {
    if (term) return;
    term = new Terminal({ convertEol: false, scrollback: 1000, fontSize: 13, cursorBlink: true });
    term.open(screen);
    screen.__term = term; // lets browser tests read the buffer
    term.onData((d) => {
      if (ws && ws.readyState === WebSocket.OPEN && writer) ws.send(encoder.encode(d));
    });
  }

  function onControl(text) {
    let m;
    try { m = JSON.parse(text); } catch { return; }
    if (!m || typeof m !== "object") return;
    if (m.type === "reconnecting") {
      setStatus("reconnecting…", "warn");
      detail.textContent = m.reason ? String(m.reason) : "";
      return;
    }
    if (m.conductor) conductor = String(m.conductor);
    if (m.type === "hello" || m.type === "writer") {
      if (typeof m.writer === "boolean") writer = m.writer;
    }
    if (m.type === "reconnected" || m.type === "hello") {
      backoff = 1000;
      setStatus(conductor ? `connected (${conductor})` : "connected", "ok");
    }
    const parts = [];
    if (m.state) parts.push(`console ${m.state}`);
    if (m.error) parts.push(String(m.error));
    if (!writer) parts.push("view only");
    if (parts.length || m.type === "writer") detail.textContent = parts.join(" · ");
  }

  function open() {
    retry = null;
    if (!wanted) return;
    ensureTerminal();
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/nodes/${encodeURIComponent(uuid)}/console/ws`;
    const protocols = ["ferric.console"];
    if (session.csrf) protocols.push(`ferric.csrf.${session.csrf}`);
    setStatus("connecting…", "warn");
    let sock;
    try {
      sock = new WebSocket(url, protocols);
    } catch (e) {
      setStatus(`disconnected (${e.message})`, "bad");
      return;
    }
    sock.binaryType = "arraybuffer";
    ws = sock;
    sock.onopen = () => { if (ws === sock) { backoff = 1000; setStatus("connected", "ok"); } };
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      if (typeof ev.data === "string") onControl(ev.data);
      else term.write(new Uint8Array(ev.data));
    };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      if (!wanted) { setStatus("disconnected"); return; }
      setStatus(`disconnected (${ev.code}${ev.reason ? ": " + ev.reason : ""})`, "bad");
      retry = setTimeout(open, backoff);
      backoff = Math.min(backoff * 2, 30000);
    };
    connectBtn.disabled = true;
    disconnectBtn.disabled = false;
  }

  function connect() {
    wanted = true;
    clearTimeout(retry);
    if (!ws) open();
  }

  function disconnect() {
    wanted = false;
    clearTimeout(retry);
    retry = null;
    if (ws) { const sock = ws; ws = null; sock.close(1000, "viewer disconnected"); }
    setStatus("disconnected");
    connectBtn.disabled = false;
    disconnectBtn.disabled = true;
  }

  function destroy() {
    disconnect();
    if (term) { term.dispose(); term = null; }
    el.remove();
  }

  return { el, connect, disconnect, destroy, get wanted() { return wanted; } };
}
