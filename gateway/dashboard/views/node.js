// One node: spec next to observed status, what is in flight, the actions the server allows
// (GET /v1/ferric/nodes/<uuid>/actions; the page never decides that itself), history paged 25 at
// a time, recent events from the node's own event stream, and the serial console. Every event
// re-reads the node and its actions (at most once a second), so state shows without reload.

import { h, fill, slug, when, toast, confirmDialog, coalesce } from "../dom.js";
import { api, follow, canAct, roleReason, actionError } from "../api.js";
import { eventLine } from "./overview.js";
import { consolePanel } from "./console.js";

const EVENTS_MAX = 100;
const HISTORY_PAGE = 25;

/** How to perform an action of each kind: [method, path under the node, body]. */
function requestFor(a, answer) {
  switch (a.kind) {
    case "power":
      return ["PUT", "states/power", { target: a.action }];
    case "provision": {
      const body = { target: a.action };
      if (a.action === "clean") body.clean_steps = [];
      if (answer.checked) body.maintenance_ok = true;
      return ["PUT", "states/provision", body];
    }
    case "maintenance":
      if (a.action === "maintenance unset") return ["DELETE", "maintenance"];
      return ["PUT", "maintenance", answer.reason ? { reason: answer.reason } : {}];
    case "console":
      return ["PUT", "states/console", { enabled: a.action === "console enable" }];
    default:
      return null;
  }
}

const json = (v) => (v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v, null, 2) : String(v));

function fields(rows) {
  return h("dl", { class: "fields" }, rows.map(([label, value, testid]) => {
    const text = json(value);
    const multi = text.includes("\n");
    return [h("dt", {}, label), h("dd", { "data-testid": testid || null, class: multi ? "" : "mono" }, multi ? h("pre", {}, text) : text)];
  }));
}

export function renderNode(main, _params, match) {
  let uuid;
  try { uuid = decodeURIComponent(match[1]); } catch { uuid = match[1]; }
  let alive = true, node = null, consoleUi = null, consoleAuto = true;

  const header = h("div", { class: "titlebar" }, h("h2", { "data-testid": "node-name" }, uuid));
  const streamStatus = h("span", { class: "stream", "data-testid": "stream-status" }, "reconnecting…");
  const error = h("p", { class: "error", hidden: true });
  const specBox = h("section", { class: "card" }, h("h3", {}, "Spec"));
  const observedBox = h("section", { class: "card" }, h("h3", {}, "Observed"));
  const inflightBox = h("section", { class: "card" }, h("h3", {}, "In flight"));
  const actionsBox = h("div", { class: "actions", "data-testid": "actions" });
  const consoleBox = h("div", {}, h("p", { class: "muted" }, "…"));
  const historyList = h("ol", { class: "history", "data-testid": "history-list" });
  const moreBtn = h("button", { type: "button", "data-testid": "history-more", hidden: true, onclick: () => loadHistory() }, "More");
  const events = h("ol", { class: "feed", "data-testid": "node-events" });

  main.appendChild(h("div", { "data-testid": "node-page" },
    header, error,
    h("div", { class: "grid two" }, specBox, observedBox),
    inflightBox,
    h("section", { class: "card" }, h("h3", {}, "Actions"), actionsBox),
    h("section", { class: "card" }, h("h3", {}, "Console"), consoleBox),
    h("div", { class: "grid two" },
      h("section", { class: "card" }, h("h3", {}, "History"), historyList, moreBtn),
      h("section", { class: "card" }, h("div", { class: "titlebar" }, h("h3", {}, "Recent events"), streamStatus), events))));

  function renderHeader(n) {
    const power = n.power_state ?? "unknown";
    fill(header,
      h("h2", { "data-testid": "node-name" }, n.name || n.uuid),
      h("span", { class: `badge power-${slug(power)}`, "data-testid": "power-state", title: "power state" }, power),
      h("span", { class: `badge prov-${slug(n.provision_state)}`, "data-testid": "provision-state", title: "provision state" }, n.provision_state ?? ""),
      n.maintenance && h("span", { class: "badge warn", title: n.maintenance_reason || "" }, "maintenance"),
      n.fault && h("span", { class: "badge bad", "data-testid": "fault" }, n.fault),
      n.name && h("span", { class: "muted mono" }, n.uuid));
    document.title = `${n.name || n.uuid} · Ferric`;
  }

  function renderFields(n) {
    fill(specBox, h("h3", {}, "Spec"), fields([
      ["driver", n.driver], ["driver_info", n.driver_info], ["properties", n.properties],
      ["instance_uuid", n.instance_uuid], ["instance_info", n.instance_info],
      ["conductor_group", n.conductor_group], ["resource_class", n.resource_class],
      ["console_enabled", n.console_enabled], ["maintenance", n.maintenance],
      ["maintenance_reason", n.maintenance_reason, "maintenance-reason"],
      ["traits", n.traits], ["description", n.description], ["owner", n.owner],
      ["protected", n.protected], ["retired", n.retired], ["extra", n.extra],
    ]));
    fill(observedBox, h("h3", {}, "Observed"), fields([
      ["power_state", n.power_state], ["target_power_state", n.target_power_state],
      ["provision_state", n.provision_state], ["target_provision_state", n.target_provision_state],
      ["last_error", n.last_error, "last-error"], ["fault", n.fault],
      ["conductor", n.conductor], ["reservation", n.reservation],
      ["provision_updated_at", n.provision_updated_at], ["updated_at", n.updated_at], ["created_at", n.created_at],
    ]));
    const flying = [];
    if (n.target_power_state) flying.push(h("li", {}, `power: ${n.power_state ?? "unknown"} → ${n.target_power_state}`));
    if (n.target_provision_state) flying.push(h("li", {}, `provision: ${n.provision_state} → ${n.target_provision_state}`));
    fill(inflightBox, h("h3", {}, "In flight"),
      flying.length ? h("ul", { "data-testid": "in-flight" }, flying) : h("p", { class: "muted", "data-testid": "in-flight" }, "nothing in flight"));
  }

  function renderActions(list) {
    const groups = new Map();
    for (const a of list) {
      if (!groups.has(a.kind)) groups.set(a.kind, []);
      groups.get(a.kind).push(a);
    }
    fill(actionsBox, [...groups].map(([kind, items]) => h("div", { class: "action-group" }, h("h4", {}, kind),
      items.map((a) => {
        const id = slug(a.action);
        const supported = requestFor(a, {}) !== null;
        let reason = null;
        if (!canAct()) reason = roleReason();
        else if (!a.allowed) reason = a.reason || "not allowed now";
        else if (!supported) reason = `this dashboard cannot perform ${kind} actions`;
        return h("div", { class: "action" },
          h("button", { type: "button", "data-testid": `action-${id}`, disabled: reason !== null, title: reason || a.action, onclick: () => perform(a) }, a.action),
          reason && h("span", { class: "reason", "data-testid": `action-reason-${id}` }, reason));
      }))));
    if (!list.length) actionsBox.appendChild(h("p", { class: "muted" }, "No actions."));
  }

  async function perform(a) {
    const name = node ? node.name || node.uuid : uuid;
    const answer = await confirmDialog({
      title: `${a.action}?`,
      message: `Node ${name} (${uuid}): ${a.action}.`,
      reasonLabel: a.action === "maintenance set" ? "Reason" : null,
      checkboxLabel: a.kind === "provision" && a.maintenance_ok ? "even though in maintenance" : null,
    });
    if (!answer || !alive) return;
    const [method, path, body] = requestFor(a, answer);
    try {
      await api(method, `/v1/nodes/${encodeURIComponent(uuid)}/${path}`, body);
      toast(`requested: ${a.action} on ${name}`);
    } catch (e) {
      toast(actionError(e), "error");
    }
    refresh();
  }

  function syncConsole(n) {
    if (n.console_enabled) {
      if (!consoleUi) {
        consoleUi = consolePanel(uuid);
        fill(consoleBox, consoleUi.el);
        if (consoleAuto) { consoleAuto = false; consoleUi.connect(); }
      }
    } else {
      if (consoleUi) { consoleUi.destroy(); consoleUi = null; consoleAuto = true; }
      fill(consoleBox, h("p", { class: "muted" }, "The console is disabled (action console enable turns it on)."));
    }
  }

  const refresh = coalesce(async () => {
    try {
      const base = `/v1/nodes/${encodeURIComponent(uuid)}`;
      const [n, acts] = await Promise.all([
        api("GET", base),
        api("GET", `/v1/ferric/nodes/${encodeURIComponent(uuid)}/actions`).catch((e) => ({ error: e })),
      ]);
      if (!alive) return;
      node = n;
      error.hidden = true;
      renderHeader(n);
      renderFields(n);
      if (acts.error) fill(actionsBox, h("p", { class: "error" }, `actions: ${acts.error.message}`));
      else renderActions(acts.actions || []);
      syncConsole(n);
    } catch (e) {
      if (!alive) return;
      error.textContent = e.status === 404 ? `Node ${uuid} could not be found.` : e.message;
      error.hidden = false;
    }
  }, 1000);

  let historyMarker = null, historyLoading = false;
  async function loadHistory() {
    if (historyLoading) return;
    historyLoading = true;
    moreBtn.disabled = true;
    const q = new URLSearchParams({ detail: "true", sort_dir: "desc", limit: String(HISTORY_PAGE) });
    if (historyMarker) q.set("marker", historyMarker);
    try {
      const r = await api("GET", `/v1/nodes/${encodeURIComponent(uuid)}/history?${q}`);
      if (!alive) return;
      const items = r.history || [];
      for (const e of items) {
        historyList.appendChild(h("li", { class: `sev-${slug(e.severity)}` },
          h("time", {}, when(e.created_at)), " ",
          h("span", { class: "badge" }, e.event_type || ""), " ",
          e.event || "",
          e.user ? h("span", { class: "muted" }, ` by ${e.user}`) : "",
          e.conductor ? h("span", { class: "muted" }, ` on ${e.conductor}`) : ""));
      }
      if (items.length) historyMarker = items[items.length - 1].uuid;
      moreBtn.hidden = !r.next && items.length < HISTORY_PAGE; // Ironic sends next when the page is full
      if (!historyList.childElementCount) historyList.appendChild(h("li", { class: "muted" }, "No history."));
    } catch (e) {
      if (alive) toast(`history: ${e.message}`, "error");
    } finally {
      historyLoading = false;
      moreBtn.disabled = false;
    }
  }

  refresh();
  loadHistory();
  const stop = follow(`/v1/ferric/events?node=${encodeURIComponent(uuid)}`, {
    onStatus: (s) => { streamStatus.textContent = s; streamStatus.classList.toggle("live", s === "live"); },
    onReset: refresh,
    onEvent: (e) => {
      events.prepend(eventLine(e));
      while (events.childElementCount > EVENTS_MAX) events.lastElementChild.remove();
      refresh();
    },
  });
  return () => {
    alive = false;
    refresh.stop();
    stop();
    if (consoleUi) consoleUi.destroy();
  };
}
