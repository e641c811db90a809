// Notifications: delivery of power events to receivers (GET /v1/ferric/deliveries) every 5 s.

import { h, fill, slug, when } from "../dom.js";
import { api } from "../api.js";

export function renderNotifications(main) {
  let alive = true;
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  main.appendChild(h("div", { "data-testid": "notifications-page" }, h("div", { class: "titlebar" }, h("h2", {}, "Notifications")), body));
  async function load() {
    try {
      const r = await api("GET", "/v1/ferric/deliveries");
      if (!alive) return;
      const list = r.receivers || [];
      fill(body, h("section", { class: "card" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Receiver", "Configured", "Pending", "Failed", "Delivered", "Last delivery", "Oldest pending", "Last error"].map((c) => h("th", {}, c)))),
        h("tbody", {}, list.map((d) => h("tr", { "data-testid": `receiver-row-${slug(d.receiver)}` },
          h("td", {}, d.receiver),
          h("td", {}, d.configured ? "yes" : "no"),
          h("td", {}, h("span", { class: d.pending ? "badge warn" : "" }, String(d.pending ?? 0))),
          h("td", {}, h("span", { class: d.failed ? "badge bad" : "" }, String(d.failed ?? 0))),
          h("td", {}, String(d.delivered ?? 0)),
          h("td", {}, when(d.last_delivery_at) || "never"),
          h("td", {}, when(d.oldest_pending_at)),
          h("td", { class: "error-text" }, d.last_error || "")))),
        list.length ? null : h("caption", {}, "No receivers are configured."))));
    } catch (e) {
      if (!alive || e.status === 401) return;
      fill(body, e.status === 404
        ? h("p", { class: "muted", "data-testid": "no-deliveries" }, "no delivery information")
        : h("p", { class: "error" }, e.message));
    }
  }
  load();
  const timer = setInterval(load, 5000);
  return () => { alive = false; clearInterval(timer); };
}
