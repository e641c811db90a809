// Conductors: GET /v1/ferric/conductors every 5 s; load = nodes held and actors running.

import { h, fill, slug, when } from "../dom.js";
import { api } from "../api.js";

export function renderConductors(main) {
  let alive = true;
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  main.appendChild(h("div", { "data-testid": "conductors-page" }, h("div", { class: "titlebar" }, h("h2", {}, "Conductors")), body));
  async function load() {
    try {
      const r = await api("GET", "/v1/ferric/conductors");
      if (!alive) return;
      const list = r.conductors || [];
      const most = Math.max(1, ...list.map((c) => c.nodes || 0));
      fill(body, h("section", { class: "card" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Name", "Alive", "Group", "Drivers", "Nodes", "Running", "Load", "Version", "Started"].map((c) => h("th", {}, c)))),
        h("tbody", {}, list.map((c) => h("tr", { "data-testid": `conductor-row-${slug(c.name)}` },
          h("td", {}, c.name),
          h("td", {}, h("span", { class: `badge ${c.alive ? "ok" : "bad"}` }, c.alive ? "alive" : "dead")),
          h("td", {}, c.conductor_group || ""),
          h("td", {}, (c.drivers || []).join(", ")),
          h("td", {}, h("a", { href: `#/nodes?conductor=${encodeURIComponent(c.name)}` }, String(c.nodes ?? 0))),
          h("td", {}, String(c.running ?? "")),
          h("td", {}, h("meter", { min: "0", max: String(most), value: String(c.nodes || 0), title: `${c.nodes || 0} nodes, ${c.running ?? "?"} actors running` })),
          h("td", {}, c.version || ""),
          h("td", {}, when(c.started_at))))),
        list.length ? null : h("caption", {}, "No conductors are alive."))));
    } catch (e) {
      if (alive && e.status !== 401) fill(body, h("p", { class: "error" }, e.message));
    }
  }
  load();
  const timer = setInterval(load, 5000);
  return () => { alive = false; clearInterval(timer); };
}
