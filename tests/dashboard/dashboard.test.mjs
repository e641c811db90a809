// Browser tests of Ferric's web dashboard (gateway/dashboard/), driven by playwright-core and a
// system Chromium. Started by a Rust integration test that runs the cluster and sets:
//   FERRIC_URL     gateway base URL (auth token)
//   FERRIC_ADMIN_TOKEN, FERRIC_READER_TOKEN   tokens of an admin and of a reader
//   SIM_URL        the simulated BMC fleet (GET $SIM_URL/sim/log: the commands it received)
//   NODES_JSON     file: [{"uuid","name","system"}] of the enrolled nodes (Redfish ones have "system")
//   CONSOLE_NODE   uuid of a node whose console is enabled (echoes input, prints "sim-console <n>")
//   CONDUCTOR_PIDS "c1=<pid>,c2=<pid>": the conductors (the test SIGKILLs CONSOLE_NODE's owner)
//   XSS_NODE       uuid of a node whose description is <img src=x onerror=window.__xss=1> and
//                  whose maintenance reason is <script>window.__xss=2</script>
//   HISTORY_NODE   uuid of a node with at least 60 history entries
//   SCREENSHOTS    directory for full-page PNGs (optional)
//   CHROMIUM       browser executable (default /usr/bin/chromium)
// Run by tests/dashboard.rs (NODE_PATH points at the playwright-core scripts/install-deps.sh
// installs).
// Every test opens its own browser context and signs in fresh; every wait has a deadline.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
// ES module resolution ignores NODE_PATH, require() honours it: playwright-core lives in the
// target directory (scripts/install-deps.sh), not next to this file.
const { chromium } = createRequire(import.meta.url)("playwright-core");

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is not set`);
  return v;
}
const BASE = env("FERRIC_URL").replace(/\/+$/, "");
const SIM = env("SIM_URL").replace(/\/+$/, "");
const ADMIN = env("FERRIC_ADMIN_TOKEN");
const READER = env("FERRIC_READER_TOKEN");
const CONSOLE_NODE = env("CONSOLE_NODE");
const XSS_NODE = env("XSS_NODE");
const HISTORY_NODE = env("HISTORY_NODE");
const PIDS = Object.fromEntries(env("CONDUCTOR_PIDS").split(",").map((p) => p.split("=")));
const SHOTS = process.env.SCREENSHOTS || "";
const XSS_DESCRIPTION = "<img src=x onerror=window.__xss=1>";
const XSS_REASON = "<script>window.__xss=2</script>";
const VERSION = { "X-OpenStack-Ironic-API-Version": "1.95" };

const ALL_NODES = JSON.parse(readFileSync(env("NODES_JSON"), "utf8"));
const SPECIAL = new Set([CONSOLE_NODE, XSS_NODE, HISTORY_NODE]);
const REDFISH = ALL_NODES.filter((n) => n.system && !SPECIAL.has(n.uuid));
const FAKE = ALL_NODES.filter((n) => !n.system && !SPECIAL.has(n.uuid));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll fn until it returns a truthy value; throw after timeout ms. */
async function waitFor(what, fn, { timeout = 20000, interval = 250 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${detail})`);
    }
    await sleep(interval);
  }
}

/** The API from Node (independent of the page), with a bearer token. */
async function ironic(method, p, body, token = ADMIN) {
  const headers = { ...VERSION, Accept: "application/json", Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(BASE + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(15000) });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  return { status: r.status, json, text };
}
async function ironicOk(method, p, body) {
  const r = await ironic(method, p, body);
  assert.ok(r.status >= 200 && r.status < 300, `${method} ${p} answered ${r.status}: ${r.text}`);
  return r.json;
}

/** Ask for a power state through the API and wait until the node has it. */
async function powerTo(uuid, target, timeout = 45000) {
  const n = await ironicOk("GET", `/v1/nodes/${uuid}`);
  if (n.power_state !== target || n.target_power_state) {
    await ironicOk("PUT", `/v1/nodes/${uuid}/states/power`, { target });
  }
  await waitFor(`${uuid} to be ${target}`, async () => {
    const m = await ironicOk("GET", `/v1/nodes/${uuid}`);
    return m.power_state === target && !m.target_power_state;
  }, { timeout, interval: 500 });
}

async function simLog() {
  const r = await fetch(`${SIM}/sim/log`, { signal: AbortSignal.timeout(15000) });
  assert.equal(r.status, 200, "GET /sim/log");
  const doc = await r.json();
  return Array.isArray(doc) ? doc : doc.entries || [];
}

let browser;
before(async () => {
  assert.ok(REDFISH.length >= 2, "NODES_JSON lists at least two Redfish nodes");
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
});
after(async () => { if (browser) await browser.close(); });

async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true, timeout: 20000 });
}

/** A fresh context; signs in through the form unless cred is null; closes it afterwards. */
async function withPage(cred, fn) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  context.setDefaultTimeout(20000);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  try {
    await page.goto(`${BASE}/dashboard/`);
    await page.getByTestId("signin-form").waitFor();
    if (cred) {
      await page.getByTestId("signin-token").fill(cred);
      await page.getByTestId("signin-submit").click();
      await page.getByTestId("user-badge").waitFor();
    }
    await fn(page);
    assert.deepEqual(errors, [], "no uncaught errors in the page");
  } finally {
    await context.close();
  }
}

const text = async (page, testid) => ((await page.getByTestId(testid).textContent()) ?? "").trim();

/** Numbers shown under these test ids (null where absent). */
function readNumbers(page, ids) {
  return page.evaluate((ids) => ids.map((id) => {
    const el = document.querySelector(`[data-testid="${CSS.escape(id)}"]`);
    return el ? Number(el.textContent.trim()) : null;
  }), ids);
}
const slug = (s) => s.trim().replace(/\s+/g, "-");

/** From the page's context, with its cookie: {status, body}. */
function pageFetch(page, method, url, headers = {}, body = undefined) {
  return page.evaluate(async ({ method, url, headers, body }) => {
    const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: r.status, body: await r.text() };
  }, { method, url, headers, body });
}

async function expectSameLocation(page) {
  assert.equal(await page.evaluate(() => window.__marker), "kept", "the page was not reloaded");
  assert.equal(await page.evaluate(() => performance.getEntriesByType("navigation").length), 1);
}

test("signed out: sign-in form only, and the API refuses", { timeout: 60000 }, async () => {
  await withPage(null, async (page) => {
    await shot(page, "signin");
    for (const sel of ['[data-testid="overview"]', '[data-testid^="count-"]', '[data-testid^="node-row-"]', '[data-testid="user-badge"]']) {
      assert.equal(await page.locator(sel).count(), 0, `${sel} is not shown signed out`);
    }
    const summary = await pageFetch(page, "GET", "/v1/ferric/summary", VERSION);
    assert.equal(summary.status, 401, "summary without a session");
    const put = await pageFetch(page, "PUT", `/v1/nodes/${REDFISH[0].uuid}/states/power`,
      { ...VERSION, "Content-Type": "application/json" }, { target: "power off" });
    assert.equal(put.status, 401, "PUT without a session");
    // A wrong token: the error shows, nothing else does.
    await page.getByTestId("signin-token").fill("definitely-not-a-token");
    await page.getByTestId("signin-submit").click();
    await page.getByTestId("signin-error").waitFor();
    assert.ok((await text(page, "signin-error")).length > 0, "a sign-in error is shown");
    assert.equal(await page.getByTestId("user-badge").count(), 0);
  });
});

test("overview: counts equal the API's and follow a power change live", { timeout: 180000 }, async () => {
  const node = REDFISH[0];
  await powerTo(node.uuid, "power on");
  await withPage(ADMIN, async (page) => {
    assert.ok(!page.url().includes(ADMIN), "no token in the URL");
    const stored = await page.evaluate(() => localStorage.length + sessionStorage.length);
    assert.equal(stored, 0, "nothing in web storage");
    assert.match(await text(page, "user-badge"), /\(admin\)$/);
    await page.getByTestId("overview").waitFor();
    await page.evaluate(() => { window.__marker = "kept"; });

    // Independent read of the summary; the page converges to it (it may read a moment earlier).
    await waitFor("the overview's counts to equal /v1/ferric/summary", async () => {
      const s = await ironicOk("GET", "/v1/ferric/summary");
      const expected = [["count-total", s.nodes]];
      for (const [k, v] of Object.entries(s.provision_state || {})) expected.push([`count-provision-${slug(k)}`, v]);
      for (const [k, v] of Object.entries(s.power_state || {})) expected.push([`count-power-${slug(k)}`, v]);
      const got = await readNumbers(page, expected.map(([id]) => id));
      const wrong = expected.map(([id, v], i) => (got[i] === v ? null : `${id}: page ${got[i]} api ${v}`)).filter(Boolean);
      if (wrong.length) throw new Error(wrong.join("; "));
      return true;
    }, { timeout: 20000, interval: 500 });
    await page.getByTestId("stream-status").filter({ hasText: "live" }).waitFor();
    await page.getByTestId("activity-feed").waitFor({ state: "attached" });

    const offCount = async () => ((await readNumbers(page, ["count-power-power-off"]))[0] ?? 0);
    const before = await waitFor("the power-off count to settle on the API's", async () => {
      const s = await ironicOk("GET", "/v1/ferric/summary");
      const api = (s.power_state || {})["power off"] || 0;
      const shown = await offCount();
      return shown === api ? { n: shown } : null;
    }, { timeout: 20000, interval: 500 });

    await ironicOk("PUT", `/v1/nodes/${node.uuid}/states/power`, { target: "power off" });
    await waitFor("the overview's power-off count to rise by one", async () => (await offCount()) === before.n + 1,
      { timeout: 20000, interval: 250 });
    await waitFor("an activity line", async () => (await page.getByTestId("activity-feed").locator("li").count()) > 0);
    await expectSameLocation(page);
    await shot(page, "overview");

    // The count links to the filtered node list, which pages on the server.
    await page.getByTestId("count-power-power-off").click();
    await page.getByTestId("node-list").waitFor();
    const listed = await ironicOk("GET", "/v1/ferric/nodes?power_state=power%20off&limit=1");
    await waitFor("node-total to equal the API's total", async () => parseInt(await text(page, "node-total"), 10) === listed.total);
    const rows = await page.locator('[data-testid^="node-row-"]').count();
    assert.ok(rows > 0 && rows <= 50, `one page of rows (${rows})`);
    assert.match(page.url(), /#\/nodes\?power_state=power%20off/);
    await shot(page, "node-list");
    if (listed.total > 50) {
      const first = await page.locator('[data-testid^="node-row-"]').first().getAttribute("data-testid");
      await page.getByTestId("next-page").click();
      await waitFor("the second page", async () =>
        (await page.locator('[data-testid^="node-row-"]').first().getAttribute("data-testid")) !== first);
      await page.getByTestId("prev-page").click();
      await waitFor("the first page again", async () =>
        (await page.locator('[data-testid^="node-row-"]').first().getAttribute("data-testid")) === first);
    }
  });
});

test("node page: power off through the dashboard reaches the BMC and shows live", { timeout: 180000 }, async () => {
  const node = REDFISH[1];
  await powerTo(node.uuid, "power on");
  await withPage(ADMIN, async (page) => {
    await page.goto(`${BASE}/dashboard/#/node/${node.uuid}`);
    await page.getByTestId("node-page").waitFor();
    await page.evaluate(() => { window.__marker = "kept"; });
    await waitFor("power-state 'power on'", async () => (await text(page, "power-state")) === "power on");
    const button = page.getByTestId("action-power-off");
    await waitFor("action-power-off enabled", () => button.isEnabled());
    await shot(page, "node");
    const clickedAt = Date.now();
    await button.click();
    await page.getByTestId("confirm-dialog").waitFor();
    assert.match(await page.getByTestId("confirm-dialog").textContent(), /power off/);
    await page.getByTestId("confirm-ok").click();
    await page.getByTestId("toast").filter({ hasText: "requested" }).first().waitFor();
    await waitFor(`a ForceOff for ${node.system} in the sim's log`, async () => (await simLog()).some((e) =>
      e.system === node.system && e.method === "POST" && e.action === "ForceOff" &&
      (e.unix_ms ?? Date.parse(e.time)) >= clickedAt), { timeout: 30000, interval: 500 });
    await waitFor("power-state 'power off' without reload", async () => (await text(page, "power-state")) === "power off",
      { timeout: 30000 });
    await expectSameLocation(page);
  });
});

test("maintenance: the reason is stored and shown as text", { timeout: 120000 }, async () => {
  const node = FAKE[0] || REDFISH[2] || REDFISH[0];
  const reason = '<b>bold</b> & "quotes"';
  const n = await ironicOk("GET", `/v1/nodes/${node.uuid}`);
  if (n.maintenance) await ironicOk("DELETE", `/v1/nodes/${node.uuid}/maintenance`);
  await withPage(ADMIN, async (page) => {
    await page.goto(`${BASE}/dashboard/#/node/${node.uuid}`);
    const button = page.getByTestId("action-maintenance-set");
    await waitFor("action-maintenance-set enabled", () => button.isEnabled());
    await button.click();
    await page.getByTestId("confirm-reason").fill(reason);
    await page.getByTestId("confirm-ok").click();
    await waitFor("maintenance-reason to show the reason", async () =>
      (await page.getByTestId("maintenance-reason").textContent()) === reason);
    assert.equal(await page.getByTestId("maintenance-reason").locator("b").count(), 0, "no <b> element");
    const m = await ironicOk("GET", `/v1/nodes/${node.uuid}`);
    assert.equal(m.maintenance, true);
    assert.equal(m.maintenance_reason, reason);
  });
  await ironicOk("DELETE", `/v1/nodes/${node.uuid}/maintenance`);
});

test("reader: actions disabled with the reason, and the API answers 403", { timeout: 90000 }, async () => {
  const node = REDFISH[1];
  await withPage(READER, async (page) => {
    assert.match(await text(page, "user-badge"), /\(reader\)$/);
    await page.goto(`${BASE}/dashboard/#/node/${node.uuid}`);
    const buttons = page.locator('button[data-testid^="action-"]');
    await waitFor("action buttons", async () => (await buttons.count()) > 0);
    const states = await buttons.evaluateAll((bs) => bs.map((b) => [b.dataset.testid, b.disabled]));
    for (const [id, disabled] of states) assert.equal(disabled, true, `${id} is disabled for a reader`);
    assert.match(await text(page, "action-reason-power-off"), /reader/);
    const csrf = await page.evaluate(async () => (await (await fetch("/dashboard/api/session")).json()).csrf);
    assert.ok(csrf, "the reader's session has a CSRF token");
    const put = await pageFetch(page, "PUT", `/v1/nodes/${node.uuid}/states/power`,
      { ...VERSION, "Content-Type": "application/json", "X-CSRF-Token": csrf }, { target: "power off" });
    assert.equal(put.status, 403, `a reader's PUT: ${put.body}`);
  });
});

test("CSRF: a write without the token is refused; sign out ends the session", { timeout: 90000 }, async () => {
  const node = FAKE[1] || FAKE[0] || REDFISH[0];
  await withPage(ADMIN, async (page) => {
    const headers = { ...VERSION, "Content-Type": "application/json" };
    const bare = await pageFetch(page, "PUT", `/v1/nodes/${node.uuid}/states/power`, headers, { target: "power on" });
    assert.equal(bare.status, 403, `PUT with the cookie but no X-CSRF-Token: ${bare.body}`);
    const csrf = await page.evaluate(async () => (await (await fetch("/dashboard/api/session")).json()).csrf);
    const ok = await pageFetch(page, "PUT", `/v1/nodes/${node.uuid}/states/power`, { ...headers, "X-CSRF-Token": csrf }, { target: "power on" });
    assert.ok(ok.status !== 401 && ok.status !== 403, `the same PUT with the token passes the checks: ${ok.status} ${ok.body}`);
    await page.getByTestId("signout").click();
    await page.getByTestId("signin-form").waitFor();
    const after = await pageFetch(page, "GET", "/v1/ferric/summary", VERSION);
    assert.equal(after.status, 401, "signed out: the cookie no longer works");
  });
});

test("XSS: markup in a node's fields renders as text", { timeout: 90000 }, async () => {
  // Ironic's node names cannot hold markup; its description and maintenance reason can.
  const xss = ALL_NODES.find((n) => n.uuid === XSS_NODE);
  await withPage(ADMIN, async (page) => {
    await page.goto(`${BASE}/dashboard/#/node/${XSS_NODE}`);
    await waitFor("the maintenance reason", async () => (await page.getByTestId("maintenance-reason").textContent()) === XSS_REASON);
    await waitFor("the description as text", async () => (await page.getByTestId("node-page").textContent()).includes(XSS_DESCRIPTION));
    await page.goto(`${BASE}/dashboard/#/nodes`);
    await page.getByTestId("node-list").waitFor();
    await page.getByTestId("node-search").fill(xss.name);
    // The unfiltered first page may hold the node already: wait for the search itself (it is
    // debounced into the URL), then for its one match.
    await waitFor("the search in the URL", async () => page.url().includes(`q=${xss.name}`));
    await waitFor("one match", async () => parseInt(await text(page, "node-total"), 10) === 1);
    await page.getByTestId(`node-row-${XSS_NODE}`).waitFor();
    assert.equal(await page.locator("img").count(), 0, "no <img> element anywhere");
    assert.equal(await page.locator("main script").count(), 0, "no <script> element in the page");
    assert.equal(await page.evaluate(() => typeof window.__xss), "undefined");
  });
});

test("history pages 25 at a time", { timeout: 90000 }, async () => {
  await withPage(ADMIN, async (page) => {
    const limits = [];
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (u.pathname.endsWith("/history")) limits.push(u.searchParams.get("limit"));
    });
    await page.goto(`${BASE}/dashboard/#/node/${HISTORY_NODE}`);
    const items = page.getByTestId("history-list").locator("li");
    await waitFor("25 history entries", async () => (await items.count()) === 25);
    await page.getByTestId("history-more").click();
    await waitFor("more history entries", async () => (await items.count()) > 25);
    const n = await items.count();
    assert.ok(n <= 50, `one more page, not everything (${n})`);
    assert.ok(limits.length >= 2 && limits.every((l) => l === "25"), `history requests ask for 25 (${limits})`);
  });
});

/** What the console terminal holds (xterm's buffer, or the rendered rows). */
function termText(page) {
  return page.evaluate(() => {
    const el = document.querySelector('[data-testid="console-terminal"]');
    if (!el) return "";
    const term = el.__term;
    if (!term) return el.textContent || "";
    const b = term.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i)?.translateToString(true) ?? "");
    return lines.join("\n");
  });
}
const shows = (all, token) => all.includes(token) || all.replace(/sim-console \d+/g, "").replace(/\s+/g, "").includes(token);

/** Type `echo token` + Enter until the echo shows (output lines may interleave). */
async function typeAndSee(page, token, timeout) {
  const deadline = Date.now() + timeout;
  for (;;) {
    await page.getByTestId("console-terminal").click();
    await page.keyboard.type(`echo ${token}`);
    await page.keyboard.press("Enter");
    try {
      await waitFor(`the echo of ${token}`, async () => shows(await termText(page), token),
        { timeout: Math.max(1000, Math.min(8000, deadline - Date.now())) });
      return;
    } catch (e) {
      if (Date.now() >= deadline) throw e;
    }
  }
}

test("console: output, input, and the failover of its conductor", { timeout: 180000 }, async () => {
  const tag = `${process.pid}-${Date.now() % 100000}`;
  await withPage(ADMIN, async (page) => {
    await page.goto(`${BASE}/dashboard/#/node/${CONSOLE_NODE}`);
    await waitFor("console connected", async () => (await text(page, "console-status")).startsWith("connected"), { timeout: 30000 });
    await waitFor("console output", async () => (await termText(page)).trim().length > 0, { timeout: 20000 });
    await typeAndSee(page, `ferric-test-a${tag}`, 20000);
    await shot(page, "console");

    await page.evaluate(() => {
      const el = document.querySelector('[data-testid="console-status"]');
      window.__statuses = [el.textContent];
      new MutationObserver(() => window.__statuses.push(el.textContent))
        .observe(el, { childList: true, characterData: true, subtree: true });
    });
    const owner = (await ironicOk("GET", `/v1/nodes/${CONSOLE_NODE}`)).conductor;
    assert.ok(PIDS[owner], `the console node's owner ${owner} is one of ${Object.keys(PIDS)}`);
    process.kill(Number(PIDS[owner]), "SIGKILL");
    await waitFor("console-status 'reconnecting…'", () =>
      page.evaluate(() => window.__statuses.some((s) => s.startsWith("reconnecting"))), { timeout: 30000, interval: 100 });
    await waitFor("console-status 'connected' after reconnecting", () => page.evaluate(() => {
      const i = window.__statuses.findIndex((s) => s.startsWith("reconnecting"));
      return i >= 0 && window.__statuses.slice(i + 1).some((s) => s.startsWith("connected")) &&
        document.querySelector('[data-testid="console-status"]').textContent.startsWith("connected");
    }), { timeout: 60000 });
    await typeAndSee(page, `ferric-test-b${tag}`, 30000);
  });
});

test("conductors and notifications pages", { timeout: 60000 }, async () => {
  const { conductors } = await ironicOk("GET", "/v1/ferric/conductors");
  await withPage(ADMIN, async (page) => {
    await page.goto(`${BASE}/dashboard/#/conductors`);
    await page.getByTestId("conductors-page").waitFor();
    for (const c of conductors.filter((c) => c.alive)) await page.getByTestId(`conductor-row-${slug(c.name)}`).waitFor();
    await shot(page, "conductors");
    await page.goto(`${BASE}/dashboard/#/notifications`);
    await page.getByTestId("notifications-page").waitFor();
    await waitFor("delivery information (or its absence)", async () =>
      (await page.locator('[data-testid^="receiver-row-"], [data-testid="no-deliveries"], [data-testid="notifications-page"] table').count()) > 0);
    await shot(page, "notifications");
  });
});

test("gateway restart: the feed resumes where it stopped and the console reconnects", { timeout: 180000 }, async () => {
  const { execFileSync } = await import("node:child_process");
  const node = FAKE[2] || FAKE[0];
  await withPage(ADMIN, async (page) => {
    await page.getByTestId("overview").waitFor();
    await page.getByTestId("stream-status").filter({ hasText: "live" }).waitFor();
    await page.evaluate(() => { window.__marker = "kept"; });
    const consolePage = await page.context().newPage();
    await consolePage.goto(`${BASE}/dashboard/#/node/${CONSOLE_NODE}`);
    await waitFor("console connected", async () => (await text(consolePage, "console-status")).startsWith("connected"), { timeout: 30000 });

    // SIGKILL the gateway (the test's harness starts another on the same port).
    const pid = Number(readFileSync(env("GATEWAY_PID_FILE"), "utf8").trim());
    process.kill(pid, "SIGKILL");
    await waitFor("the feed to notice", async () => (await text(page, "stream-status")) !== "live", { timeout: 15000, interval: 100 });
    // A change while no gateway serves: written to etcd directly, carried out by its conductor.
    execFileSync(env("FERRIC_BIN"), ["ctl", "--etcd", env("ETCD_URL"), "--prefix", env("FERRIC_PREFIX"),
      "node", "power", node.uuid, "on"], { stdio: ["ignore", "ignore", "inherit"], timeout: 30000 });

    // The feed reconnects by itself, from the last event it had: the change made during the
    // outage shows (a stream started afresh would have missed it), with no reload.
    await waitFor("the feed live again", async () => (await text(page, "stream-status")) === "live", { timeout: 60000, interval: 200 });
    const short = node.uuid.slice(0, 8);
    await waitFor(`the activity feed to show ${short}'s power event from the outage`, async () =>
      (await page.getByTestId("activity-feed").locator("li").allTextContents()).some((l) => l.includes(short) && /power/.test(l)),
      { timeout: 30000 });
    await expectSameLocation(page);
    // The session outlived the gateway (it is in etcd): nothing asked to sign in again.
    assert.equal(await page.getByTestId("signin-form").count(), 0);

    // The console's websocket died with the gateway; it is retried and serves again.
    await waitFor("console connected again", async () => (await text(consolePage, "console-status")).startsWith("connected"), { timeout: 60000, interval: 200 });
    await typeAndSee(consolePage, `ferric-test-c${process.pid}`, 30000);
  });
});
