// Overview: counts from GET /v1/ferric/summary, each a link to the filtered node list; the
// conductors; a live activity feed from the all-nodes event stream. The summary is re-read at
// most once every 2 s while events arrive, and every 15 s regardless.

import { h, fill, slug, when, shortId, coalesce } from "../dom.js";
import { api, follow } from "../api.js";

const FEED_MAX = 50;

const nodesLink = (key, value) => `#/nodes?${key}=${encodeURIComponent(value)}`;

function countList(title, entries, testPrefix, key) {
  return h("section", { class: "card" }, h("h3", {}, title),
    h("ul", { class: "counts" }, entries.map(([name, n]) =>
      h("li", {}, h("span", { class: "label" }, name),
        h("a", { href: nodesLink(key, name), "data-testid": `${testPrefix}-${slug(name)}` }, String(n)))),
      entries.length ? null : h("li", { class: "muted" }, "none")));
}

const sorted = (obj) => Object.entries(obj || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));

function renderSummary(box, s) {
  const power = { "power on": 0, "power off": 0, ...(s.power_state || {}) };
  const faults = sorted(s.faults);
  const anyFault = faults.reduce((n, [, c]) => n + c, 0);
  fill(
    box,
    h("section", { class: "card totals" },
      h("div", {}, h("span", { class: "label" }, "Nodes"), h("a", { href: "#/nodes", class: "big", "data-testid": "count-total" }, String(s.nodes ?? 0))),
      h("div", {}, h("span", { class: "label" }, "Maintenance"), h("a", { href: nodesLink("maintenance", "true"), class: "big", "data-testid": "count-maintenance" }, String(s.maintenance ?? 0))),
      h("div", {}, h("span", { class: "label" }, "Any fault"), h("a", { href: nodesLink("fault", "any"), class: "big", "data-testid": "count-fault-any" }, String(anyFault))),
      h("div", {}, h("span", { class: "label" }, "Unowned"), h("a", { href: nodesLink("unowned", "true"), class: "big", "data-testid": "count-unowned" }, String(s.unowned ?? 0))),
      h("div", { class: "muted" }, `revision ${s.revision ?? "?"}`)),
    h("div", { class: "grid" },
      countList("Provision state", sorted(s.provision_state), "count-provision", "provision_state"),
      countList("Power state", sorted(power), "count-power", "power_state"),
      countList("Faults", faults, "count-fault", "fault")),
    h("section", { class: "card" }, h("h3", {}, "Conductors"),
      h("table", {},
        h("thead", {}, h("tr", {}, ["Name", "Alive", "Nodes", "Running", "Version", "Started", "Group"].map((c) => h("th", {}, c)))),
        h("tbody", {}, (s.conductors || []).map((c) =>
          h("tr", { "data-testid": `conductor-row-${slug(c.name)}` },
            h("td", {}, c.name),
            h("td", {}, h("span", { class: `badge ${c.alive ? "ok" : "bad"}` }, c.alive ? "alive" : "dead")),
            h("td", {}, h("a", { href: nodesLink("conductor", c.name) }, String(c.nodes ?? 0))),
            h("td", {}, String(c.running ?? "")),
            h("td", {}, c.version || ""),
            h("td", {}, when(c.started_at)),
            h("td", {}, c.conductor_group || "")))))),
  );
}

/** One event in words. */
export function describeEvent(e) {
  if (e.error) return `${e.record}: ${e.error}`;
  const gone = e.deleted ? " (deleted)" : "";
  switch (e.record) {
    case "status": {
      const parts = [e.power_state ?? "power unknown", e.provision_state ?? "no provision state"];
      if (e.target_power_state) parts.push(`→ ${e.target_power_state}`);
      if (e.target_provision_state) parts.push(`→ ${e.target_provision_state}`);
      if (e.fault) parts.push(`fault: ${e.fault}`);
      if (e.last_error) parts.push(`error: ${e.last_error}`);
      return `status${gone}: ${parts.join(", ")}`;
    }
    case "spec": {
      if (e.deleted) return "node deleted";
      const parts = [];
      if (e.name) parts.push(`name ${e.name}`);
      parts.push(e.maintenance ? `maintenance on${e.maintenance_reason ? ` (${e.maintenance_reason})` : ""}` : "no maintenance");
      if (e.power_request) parts.push(`asked: ${e.power_request.target}${e.power_request.requested_by ? ` by ${e.power_request.requested_by}` : ""}`);
      if (e.provision_request) parts.push(`asked: ${e.provision_request.target}${e.provision_request.requested_by ? ` by ${e.provision_request.requested_by}` : ""}`);
      return `spec: ${parts.join(", ")}`;
    }
    case "reservation":
      return e.deleted ? "released by its conductor" : `taken by conductor ${e.conductor ?? "?"}`;
    case "heartbeat":
      return e.deleted ? "agent heartbeat cleared" : `agent heartbeat${e.agent_status ? ` (${e.agent_status})` : ""}`;
    case "conductor":
      return e.deleted ? `conductor ${e.conductor} left` : `conductor ${e.conductor} is alive`;
    case "power_event":
      return `power event: ${e.previous_power_state ?? "?"} → ${e.power_state ?? "?"} (seq ${e.seq})`;
    default:
      return String(e.record ?? "change");
  }
}

/** A feed line: time, node (short uuid, a link), what changed. */
export function eventLine(e) {
  return h("li", {},
    h("time", {}, new Date().toLocaleTimeString()), " ",
    e.node ? h("a", { href: `#/node/${encodeURIComponent(e.node)}`, class: "mono", title: e.node }, shortId(e.node)) : h("span", { class: "mono" }, "cluster"),
    " ", describeEvent(e));
}

export function renderOverview(main) {
  let alive = true;
  const status = h("span", { class: "stream", "data-testid": "stream-status" }, "reconnecting…");
  const summaryBox = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const feed = h("ol", { class: "feed", "data-testid": "activity-feed" });
  main.appendChild(h("div", { "data-testid": "overview" },
    h("div", { class: "titlebar" }, h("h2", {}, "Overview"), status),
    summaryBox,
    h("section", { class: "card" }, h("h3", {}, "Activity"), feed)));

  const refresh = coalesce(async () => {
    try {
      const s = await api("GET", "/v1/ferric/summary");
      if (alive) renderSummary(summaryBox, s);
    } catch (e) {
      if (alive && e.status !== 401) fill(summaryBox, h("p", { class: "error" }, e.message));
    }
  }, 2000);
  refresh();
  const every = setInterval(refresh, 15000);
  const stop = follow("/v1/ferric/events", {
    onStatus: (s) => { status.textContent = s; status.classList.toggle("live", s === "live"); },
    onReset: refresh,
    onEvent: (e) => {
      feed.prepend(eventLine(e));
      while (feed.childElementCount > FEED_MAX) feed.lastElementChild.remove();
      refresh();
    },
  });
  return () => { alive = false; refresh.stop(); clearInterval(every); stop(); };
}
