// Node list: GET /v1/ferric/nodes with the filters of the hash (#/nodes?provision_state=...),
// paged on the server (limit 50, marker); Previous walks back a stack of markers kept in memory.
// Filter changes rewrite the hash with replaceState so links and reloads show the same list.

import { h, fill, slug } from "../dom.js";
import { api } from "../api.js";

const LIMIT = 50;
const FILTERS = ["q", "provision_state", "power_state", "maintenance", "fault", "conductor", "unowned"];
const PROVISION_STATES = ["enroll", "verifying", "manageable", "inspecting", "inspect wait", "inspect failed",
  "available", "cleaning", "clean wait", "clean failed", "clean hold", "deploying", "wait call-back",
  "deploy failed", "deploy hold", "active", "deleting", "error", "adopting", "adopt failed", "rebuild",
  "rescuing", "rescue wait", "rescue failed", "rescue", "unrescuing", "unrescue failed",
  "servicing", "service wait", "service failed", "service hold"];
const POWER_STATES = ["power on", "power off", "unknown"];
const FAULTS = ["any", "power failure", "clean failure", "rescue abort failure", "console failure"];

function select(testid, label, current, options) {
  const opts = [["", "(any)"], ...options.map((o) => (Array.isArray(o) ? o : [o, o]))];
  if (current && !opts.some(([v]) => v === current)) opts.push([current, current]);
  const el = h("select", { "data-testid": testid, name: testid },
    opts.map(([v, text]) => h("option", { value: v, selected: v === (current || "") }, text)));
  return [el, h("label", {}, h("span", {}, label), el)];
}

export function renderNodes(main, params) {
  let alive = true;
  const filters = {};
  for (const k of FILTERS) if (params.get(k)) filters[k] = params.get(k);
  const markers = []; // markers of the pages before this one ("" = first page)
  let marker = "";
  let next = null;
  let loadSeq = 0;

  const search = h("input", { type: "search", "data-testid": "node-search", placeholder: "name, UUID or MAC", value: filters.q || "", autocomplete: "off" });
  const [prov, provRow] = select("filter-provision", "Provision", filters.provision_state, PROVISION_STATES);
  const [power, powerRow] = select("filter-power", "Power", filters.power_state, POWER_STATES);
  const [maint, maintRow] = select("filter-maintenance", "Maintenance", filters.maintenance, [["true", "in maintenance"], ["false", "not in maintenance"]]);
  const [fault, faultRow] = select("filter-fault", "Fault", filters.fault, FAULTS.map((f) => (f === "any" ? ["any", "any fault"] : f)));
  const conductor = h("input", { type: "text", "data-testid": "filter-conductor", placeholder: "conductor", value: filters.conductor || "", size: "12" });
  const total = h("span", { "data-testid": "node-total" }, "");
  const pageInfo = h("span", { class: "muted" });
  const prev = h("button", { type: "button", "data-testid": "prev-page", disabled: true, onclick: () => { marker = markers.pop() ?? ""; load(); } }, "← Previous");
  const nextBtn = h("button", { type: "button", "data-testid": "next-page", disabled: true, onclick: () => { if (next) { markers.push(marker); marker = next; load(); } } }, "Next →");
  const tbody = h("tbody", {});
  const error = h("p", { class: "error", hidden: true });

  function applyFilters() {
    const set = (k, v) => { if (v) filters[k] = v; else delete filters[k]; };
    set("q", search.value.trim());
    set("provision_state", prov.value);
    set("power_state", power.value);
    set("maintenance", maint.value);
    set("fault", fault.value);
    set("conductor", conductor.value.trim());
    const qs = new URLSearchParams(filters).toString();
    history.replaceState(null, "", `#/nodes${qs ? "?" + qs : ""}`);
    markers.length = 0;
    marker = "";
    load();
  }
  let debounce = null;
  search.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(applyFilters, 300); });
  conductor.addEventListener("change", applyFilters);
  for (const s of [prov, power, maint, fault]) s.addEventListener("change", applyFilters);

  async function load() {
    const seq = ++loadSeq;
    const q = new URLSearchParams(filters);
    q.set("limit", String(LIMIT));
    if (marker) q.set("marker", marker);
    prev.disabled = nextBtn.disabled = true;
    try {
      const r = await api("GET", `/v1/ferric/nodes?${q}`);
      if (!alive || seq !== loadSeq) return;
      error.hidden = true;
      next = r.next || null;
      total.textContent = `${r.total ?? "?"} matching`;
      const first = markers.length * LIMIT + 1;
      const shown = (r.nodes || []).length;
      pageInfo.textContent = shown ? `showing ${first}–${first + shown - 1}` : "";
      fill(tbody, (r.nodes || []).map(row));
      if (!shown) tbody.appendChild(h("tr", {}, h("td", { colspan: "8", class: "muted" }, "No nodes match.")));
      prev.disabled = markers.length === 0 && !marker;
      nextBtn.disabled = !next;
    } catch (e) {
      if (!alive || seq !== loadSeq) return;
      error.textContent = e.message;
      error.hidden = false;
      prev.disabled = markers.length === 0 && !marker;
    }
  }

  const link = (n) => h("a", { href: `#/node/${encodeURIComponent(n.uuid)}` }, n.name || n.uuid);
  const row = (n) => h("tr", { "data-testid": `node-row-${n.uuid}` },
    h("td", { class: "name" }, link(n)),
    h("td", { class: "mono" }, n.uuid),
    h("td", {}, h("span", { class: `badge power-${slug(n.power_state)}` }, n.power_state ?? "unknown"),
      n.target_power_state ? ` → ${n.target_power_state}` : ""),
    h("td", {}, h("span", { class: `badge prov-${slug(n.provision_state)}` }, n.provision_state ?? ""),
      n.target_provision_state ? ` → ${n.target_provision_state}` : ""),
    h("td", { title: n.maintenance_reason || "" }, n.maintenance ? h("span", { class: "badge warn" }, "maintenance") : ""),
    h("td", { title: n.last_error || "" }, n.fault ? h("span", { class: "badge bad" }, n.fault) : ""),
    h("td", {}, n.conductor || h("span", { class: "muted" }, "none")),
    h("td", {}, n.driver || ""));

  main.appendChild(h("div", { "data-testid": "node-list" },
    h("div", { class: "titlebar" }, h("h2", {}, "Nodes"), total),
    h("form", { class: "card filters", onsubmit: (ev) => { ev.preventDefault(); clearTimeout(debounce); applyFilters(); } },
      h("label", { class: "grow" }, h("span", {}, "Search"), search), provRow, powerRow, maintRow, faultRow,
      h("label", {}, h("span", {}, "Conductor"), conductor),
      filters.unowned ? h("span", { class: "badge warn" }, "unowned only") : null),
    error,
    h("table", { class: "nodes" },
      h("thead", {}, h("tr", {}, ["Name", "UUID", "Power", "Provision", "Maintenance", "Fault", "Conductor", "Driver"].map((c) => h("th", {}, c)))),
      tbody),
    h("div", { class: "pager" }, prev, pageInfo, nextBtn)));
  load();
  return () => { alive = false; clearTimeout(debounce); };
}
