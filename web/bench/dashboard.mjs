// First paint of the dashboard's overview on a large database, in headless
// Chromium: for each window, opens `/?window=W` several times, each in a
// fresh browser context (nothing cached), and prints per run and then per
// window (median, max):
//   - first-contentful-paint (Paint Timing: the page's shell, drawn before
//     any data arrives),
//   - ready: until `body[data-state="ready"]`, when every number and chart
//     of the overview is drawn (the figure that depends on the database),
//   - the slowest API request of the page (resource timing).
// Speed is printed, never judged. Each window is also checked once: the
// page's started count equals the API's answer for the same window.
//
// Run by scripts/bench-dashboard, with:
//   REMAUDIT_WEB_BASE_URL      the service (auth off, or REMAUDIT_WEB_READER_TOKEN)
//   BENCH_DASHBOARD_WINDOWS    default 7d,90d
//   BENCH_DASHBOARD_RUNS       runs per window, default 5

import { chromium } from 'playwright-core';

import { CHROMIUM, measure, summary, ms } from '../test/firstpaint.mjs';

const base = process.env.REMAUDIT_WEB_BASE_URL;
const token = process.env.REMAUDIT_WEB_READER_TOKEN || undefined;
const windows = (process.env.BENCH_DASHBOARD_WINDOWS || '7d,90d').split(',').filter(Boolean);
const runs = Math.max(1, Number.parseInt(process.env.BENCH_DASHBOARD_RUNS || '5', 10) || 5);
if (!base) {
  console.error('web/bench/dashboard.mjs: set REMAUDIT_WEB_BASE_URL');
  process.exit(2);
}

async function apiTotals(window) {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const res = await fetch(new URL(`/api/v1/audit/analytics/success-rate?window=${window}`, base), { headers });
  if (!res.ok) throw new Error(`success-rate ${window}: ${res.status} ${await res.text()}`);
  return (await res.json()).totals;
}

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
const results = [];
let problems = 0;
try {
  for (const window of windows) {
    const url = new URL(`/?window=${window}`, base).href;
    const rows = [];
    for (let run = 1; run <= runs; run += 1) {
      const m = await measure(browser, url, {
        token,
        inspect: run === 1 ? (page) => page.locator('[data-total="started"]').getAttribute('data-value') : undefined,
      });
      rows.push(m);
      const slow = m.slowest ? `, slowest API ${ms(m.slowest.ms)} (${m.slowest.path})` : '';
      console.log(`overview ${window} run ${run}: first-contentful-paint ${ms(m.fcp)}, ready ${ms(m.ready)}${slow}`);
      if (run === 1) {
        const totals = await apiTotals(window);
        if (Number(m.inspected) !== totals.started) {
          console.error(`SURPRISE: overview ${window} shows ${m.inspected} started, the API answers ${totals.started}`);
          problems += 1;
        } else {
          console.log(`  overview ${window}: ${totals.started} remediations started in the window, as the API answers`);
        }
      }
      if (m.ready === null || m.fcp === null) {
        console.error(`SURPRISE: overview ${window} run ${run}: no ${m.fcp === null ? 'first-contentful-paint' : 'ready time'} recorded`);
        problems += 1;
      }
    }
    results.push({ window, fcp: summary(rows.map((r) => r.fcp)), ready: summary(rows.map((r) => r.ready)), api: summary(rows.map((r) => r.slowest?.ms)) });
  }
} finally {
  await browser.close();
}

console.log('\nfirst paint of the overview (ms, over fresh browser contexts):');
console.log('window  runs  FCP median  FCP max  ready median  ready max  slowest API median  max');
for (const r of results) {
  const f = (x) => (x === null ? 'n/a' : String(Math.round(x))).padStart(6);
  console.log(
    `${r.window.padEnd(6)}  ${String(r.fcp.n).padStart(4)}  ${f(r.fcp.median)}      ${f(r.fcp.max)}   ${f(r.ready.median)}        ${f(r.ready.max)}     ${f(r.api.median)}            ${f(r.api.max)}`,
  );
}
if (problems > 0) {
  console.error(`web/bench/dashboard.mjs: ${problems} problem(s)`);
  process.exit(1);
}
