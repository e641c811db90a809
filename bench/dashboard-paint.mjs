// The dashboard overview's first meaningful paint, for `ferric bench dashboard`: a fresh page in
// Debian's Chromium (playwright-core, NODE_PATH set by the bench) loads /dashboard/ under noauth,
// and the time is taken inside the page (performance.now(), from navigation start) at the first
// animation frame where the overview shows the fleet's total. Prints one JSON object.
import { createRequire } from "node:module";
// ES module resolution ignores NODE_PATH, require() honours it: playwright-core lives in the
// target directory (scripts/install-deps.sh), not next to this file.
const { chromium } = createRequire(import.meta.url)("playwright-core");

const url = process.env.FERRIC_URL;
const nodes = Number(process.env.NODES);
const loads = Number(process.env.LOADS || 5);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
const times = [];
const fcps = [];
let summaryBytes = 0;
try {
  for (let i = 0; i < loads; i++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("response", async (r) => {
      if (r.url().endsWith("/v1/ferric/summary")) {
        summaryBytes = (await r.body().catch(() => Buffer.alloc(0))).length;
      }
    });
    await page.goto(`${url}/dashboard/`, { waitUntil: "commit" });
    const handle = await page.waitForFunction(
      (n) => {
        const el = document.querySelector('[data-testid="count-total"]');
        if (!el) return null;
        const shown = Number(el.textContent.replace(/[^0-9]/g, ""));
        return shown === n ? performance.now() : null;
      },
      nodes,
      { polling: "raf", timeout: 30_000 },
    );
    times.push(await handle.jsonValue());
    const fcp = await page.evaluate(
      () => performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? null,
    );
    if (fcp !== null) fcps.push(fcp);
    await context.close();
  }
} finally {
  await browser.close();
}
const sorted = (a) => [...a].sort((x, y) => x - y);
const p50 = (a) => (a.length ? sorted(a)[Math.floor((a.length - 1) / 2)] : null);
console.log(
  JSON.stringify({
    loads: times,
    p50_ms: p50(times),
    max_ms: times.length ? Math.max(...times) : null,
    fcp_p50_ms: p50(fcps),
    summary_bytes: summaryBytes,
  }),
);
