// The dashboard in a real browser: Debian's headless Chromium, driven by
// playwright-core, against `remaudit serve` holding the fleet of seed.mjs,
// with auth on. scripts/web-test starts the service, seeds it and runs this
// file with:
//   REMAUDIT_WEB_BASE_URL       the service, e.g. http://127.0.0.1:8123
//   REMAUDIT_WEB_ADMIN_TOKEN    an admin's token
//   REMAUDIT_WEB_READER_TOKEN   a reader's token
//   REMAUDIT_WEB_WRITER_TOKEN   a writer's token (it may not read)
//   REMAUDIT_WEB_SCREENSHOTS    where screenshots go (default target/web-screenshots)
//
// Every test fails when a page requests anything outside its own origin
// (data: and blob: aside), logs a console error or throws. The browser logs
// an error for every 4xx answer it receives; a test that provokes one on
// purpose (a wrong token, bad search input) names the status it expects,
// and only that status, from the service's own origin, is let through.
//
// Pages are waited for on `body[data-state]` (loading -> ready | error |
// auth), never on a delay. Numbers on the pages are compared with the API's
// answers to the same question, fetched here with the reader's token.
// Speed is printed (first paint, time to ready), never asserted.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { CHROMIUM, TOKEN_KEY, probe, paintTimes, ms } from './firstpaint.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const BASE = process.env.REMAUDIT_WEB_BASE_URL;
const TOKENS = {
  admin: process.env.REMAUDIT_WEB_ADMIN_TOKEN,
  reader: process.env.REMAUDIT_WEB_READER_TOKEN,
  writer: process.env.REMAUDIT_WEB_WRITER_TOKEN,
};
const SHOTS = process.env.REMAUDIT_WEB_SCREENSHOTS || path.resolve(here, '..', '..', 'target', 'web-screenshots');
const ORIGIN = BASE ? new URL(BASE).origin : '';
const WIDTHS = [1280, 390];
const HEIGHT = 900;
const SCHEMES = ['light', 'dark'];
const WINDOWS = ['24h', '7d', '30d', '90d'];
const STATE_TIMEOUT = 30_000;

const API = {
  list: '/api/v1/audit/remediation-orchestration',
  item: (id) => `/api/v1/audit/remediation-orchestration/${id}`,
  successRate: '/api/v1/audit/analytics/success-rate',
  failures: '/api/v1/audit/analytics/failures',
  durations: '/api/v1/audit/analytics/durations',
  retries: '/api/v1/audit/analytics/retries',
  postmortem: '/api/v1/audit/analytics/postmortem',
  adminLog: '/api/v1/admin/log',
};

let browser;

before(async () => {
  for (const [name, value] of Object.entries({ REMAUDIT_WEB_BASE_URL: BASE, ...TOKENS })) {
    assert.ok(value, `set ${name.startsWith('REMAUDIT') ? name : `REMAUDIT_WEB_${name.toUpperCase()}_TOKEN`} (scripts/web-test does)`);
  }
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
});

after(async () => {
  await browser?.close();
});

// ---------------------------------------------------------------- helpers

/** GET (or another method) on the API from Node: `{ status, body }`. */
async function api(pathAndQuery, { token = TOKENS.reader, method = 'GET', body } = {}) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(new URL(pathAndQuery, BASE), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

async function apiOk(pathAndQuery, options) {
  const r = await api(pathAndQuery, options);
  assert.equal(r.status, 200, `${pathAndQuery}: ${JSON.stringify(r.body)}`);
  return r.body;
}

const qs = (params) =>
  new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== '')).toString();

/**
 * A fresh browser context and page, watched: requests outside the origin,
 * console errors, page errors and unexpected dialogs are collected in
 * `problems`; `apiRequests` keeps every API URL the page asked for.
 * `allowStatus` lists the HTTP statuses whose "Failed to load resource"
 * console errors are expected.
 */
async function openPage({ token, width = 1280, height = HEIGHT, colorScheme = 'light', allowStatus = [] } = {}) {
  const context = await browser.newContext({
    viewport: { width, height },
    colorScheme,
    acceptDownloads: true,
  });
  await context.addInitScript(probe, { token, key: TOKEN_KEY });
  const page = await context.newPage();
  const problems = [];
  const apiRequests = [];
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (url.protocol === 'data:' || url.protocol === 'blob:') return;
    if (url.origin !== ORIGIN) problems.push(`request outside the origin: ${req.method()} ${req.url()}`);
    else if (url.pathname.startsWith('/api/')) apiRequests.push(url);
  });
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const failed = /^Failed to load resource: the server responded with a status of (\d{3})/.exec(msg.text());
    const from = msg.location()?.url || '';
    if (failed && allowStatus.includes(Number(failed[1])) && (from === '' || from.startsWith(ORIGIN))) return;
    problems.push(`console error: ${msg.text()}${from ? ` (${from})` : ''}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  const dialogs = [];
  const watched = {
    /** Set to true to accept the next dialogs (recorded in `dialogs`). */
    acceptDialogs: false,
    dialogs,
  };
  page.on('dialog', async (dialog) => {
    // Only the delete button may ask (confirm), when a test expects it.
    dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    if (watched.acceptDialogs) {
      await dialog.accept();
    } else {
      problems.push(`unexpected dialog: ${dialog.type()} ${dialog.message()}`);
      await dialog.dismiss();
    }
  });
  return Object.assign(watched, {
    page,
    context,
    problems,
    apiRequests,
    /** Fails on anything collected, then closes the context. */
    async close() {
      try {
        assert.deepEqual(problems, [], `the page misbehaved:\n${problems.join('\n')}`);
      } finally {
        await context.close();
      }
    },
  });
}

/** Runs `body` with a watched page, closing it (and checking it) afterwards. */
async function withPage(options, body) {
  const p = await openPage(options);
  let failed = true;
  try {
    await body(p);
    failed = false;
  } finally {
    if (failed) await p.context.close();
    else await p.close();
  }
}

/** Waits until `body[data-state]` leaves `loading`; answers the state. */
async function settled(page, timeout = STATE_TIMEOUT) {
  await page.locator('body[data-state]:not([data-state="loading"])').waitFor({ state: 'attached', timeout });
  return page.evaluate(() => document.body.dataset.state);
}

/** Navigates and expects the page to become ready. */
async function load(page, pathAndQuery, want = 'ready') {
  await page.goto(new URL(pathAndQuery, BASE).href);
  const state = await settled(page);
  if (state !== want) {
    const text = await page.locator('main').innerText().catch(() => '');
    assert.fail(`${pathAndQuery}: expected data-state=${want}, got ${state}: ${text.slice(0, 400)}`);
  }
}

async function shoot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

const attr = (locator, name) => locator.getAttribute(name);

/** Parses CSV text (RFC 4180: quoted fields, doubled quotes, CRLF) into rows of fields. */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i += 1;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  if (field !== '' || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}
const digits = (s) => (s || '').replace(/[^0-9]/g, '');

/** The page's last request to an API path (a URL). */
function lastRequest(apiRequests, pathname) {
  const found = apiRequests.filter((u) => u.pathname === pathname);
  assert.ok(found.length > 0, `the page never asked ${pathname}; it asked: ${apiRequests.map((u) => u.pathname + u.search).join(', ')}`);
  return found[found.length - 1];
}

// The data the tests pick their subjects from, read once through the API.
let fleetCache;
async function fleet() {
  if (fleetCache) return fleetCache;
  const items = [];
  let cursor;
  do {
    const page = await apiOk(`${API.list}?${qs({ limit: 1000, cursor })}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  const retries = await apiOk(`${API.retries}?${qs({ window: '90d', limit: 1000 })}`);
  fleetCache = { items, retries };
  return fleetCache;
}

async function pickRemediation(predicate, why) {
  const { items } = await fleet();
  const found = items.find(predicate);
  assert.ok(found, `the seeded data has no remediation that ${why}`);
  return found;
}

// ------------------------------------------------------------------ tests

test('the CSP header is on every page and allows no inline or eval code', async () => {
  for (const p of ['/', '/postmortem?fingerprint=x', '/remediation?id=1', '/search']) {
    const res = await fetch(new URL(p, BASE));
    assert.equal(res.status, 200, `${p} answers ${res.status}`);
    assert.match(res.headers.get('content-type') || '', /^text\/html/, `${p} is HTML`);
    const csp = res.headers.get('content-security-policy');
    assert.ok(csp, `${p} has no Content-Security-Policy header`);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, `${p}: ${csp}`);
    assert.match(csp, /script-src[^;]*'self'/, `${p}: scripts from the origin only: ${csp}`);
    assert.doesNotMatch(csp, /(script|default)-src[^;]*(\*|https?:)/, `${p}: no other origin for scripts: ${csp}`);
    await res.arrayBuffer();
  }
});

test('every page at 1280 and 390 pixels, light and dark, with screenshots', async () => {
  const { retries, items } = await fleet();
  assert.ok(retries.items.length > 0, 'the seed has retried alerts');
  const fp = retries.items[0].alert_fingerprint;
  const failed = items.find((r) => r.overall_phase === 'failed');
  assert.ok(failed, 'the seed has a failed remediation');
  const pages = [
    ['overview', '/?window=7d', 'section#retries tr[data-fingerprint]'],
    ['postmortem', `/postmortem?${qs({ fingerprint: fp, window: '90d' })}`, 'tr[data-remediation-id]'],
    ['remediation', `/remediation?id=${failed.id}`, '#gantt [data-phase]'],
    ['search', `/search?${qs({ namespace: failed.namespace })}`, 'table#results tbody tr[data-remediation-id]'],
  ];
  const written = [];
  // Every variant runs and is photographed; what went wrong is told at the end.
  const failures = [];
  for (const [name, url, needs] of pages) {
    for (const width of WIDTHS) {
      for (const colorScheme of SCHEMES) {
        const variant = `${name}-${width}-${colorScheme}`;
        try {
          await withPage({ token: TOKENS.reader, width, colorScheme }, async ({ page }) => {
            await load(page, url);
            written.push(await shoot(page, variant));
            await checkPage(page, variant, needs, colorScheme);
          });
        } catch (e) {
          failures.push(e.message.split('\n')[0].slice(0, 400));
        }
      }
    }
  }
  console.log(`screenshots:\n  ${written.join('\n  ')}`);
  assert.deepEqual(failures, [], `pages that fail:\n${failures.join('\n')}`);
});

/** What every page must be, once ready. */
async function checkPage(page, variant, needs, colorScheme) {
  assert.ok((await page.locator(needs).count()) > 0, `${variant} shows ${needs}`);
  // Navigation is there on every page.
  assert.equal(await page.locator('nav a[href="/"]').count(), 1, `${variant}: nav links the overview`);
  assert.equal(await page.locator('nav a[href="/search"]').count(), 1, `${variant}: nav links the search`);
  // Record text is text: the seed's markup never runs.
  assert.equal(await page.evaluate(() => document.body.dataset.pwned), undefined, `${variant} ran markup from a record`);
  // Usable at this width: nothing pushes the page sideways.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `${variant} scrolls sideways by ${overflow} px`);
  // The colour scheme reaches the page.
  const dark = await page.evaluate(() => matchMedia('(prefers-color-scheme: dark)').matches);
  assert.equal(dark, colorScheme === 'dark');
  // Every form control has a label (a <label>, aria-label or aria-labelledby).
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
      .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')))
      .map((el) => el.id || el.name || el.outerHTML.slice(0, 60)),
  );
  assert.deepEqual(unlabelled, [], `${variant}: form controls without a label`);
  // Ids are unique.
  const dupIds = await page.evaluate(() => {
    const seen = new Map();
    for (const el of document.querySelectorAll('[id]')) seen.set(el.id, (seen.get(el.id) || 0) + 1);
    return [...seen].filter(([, n]) => n > 1).map(([id]) => id);
  });
  assert.deepEqual(dupIds, [], `${variant}: ids used more than once`);
  // No value printed as null/undefined/NaN.
  const text = await page.locator('main').innerText();
  const stray = text.match(/\b(null|undefined|NaN)\b|\[object Object\]/g);
  assert.equal(stray, null, `${variant}: the page prints ${JSON.stringify(stray)}: ${JSON.stringify(text.slice(0, 200))}`);
  // Ready means drawn: the page asked the API nothing after declaring itself ready.
  const late = await page.evaluate(() =>
    performance
      .getEntriesByType('resource')
      .filter((e) => new URL(e.name).pathname.startsWith('/api/') && e.startTime > (window.__remauditReadyAt ?? Infinity))
      .map((e) => new URL(e.name).pathname + new URL(e.name).search),
  );
  assert.deepEqual(late, [], `${variant}: data-state became ready while the page still had API requests to make: ${late.join(', ')}`);
}

test('first paint of the overview (printed, not asserted)', async () => {
  const rows = [];
  for (const window of ['7d', '90d']) {
    for (let run = 0; run < 3; run += 1) {
      await withPage({ token: TOKENS.reader }, async ({ page }) => {
        await load(page, `/?window=${window}`);
        rows.push({ window, run, ...(await paintTimes(page)) });
      });
    }
  }
  for (const r of rows) {
    console.log(`first paint: overview ${r.window} run ${r.run + 1}: first-contentful-paint ${ms(r.fcp)}, ready ${ms(r.ready)}`);
  }
  assert.ok(rows.every((r) => r.ready !== null), 'body[data-state="ready"] was seen');
});

/** Compares the overview's numbers, as shown, with the API's answers. */
async function checkOverviewNumbers(page, apiRequests, window, namespace) {
  // Totals.
  const rateUrl = lastRequest(apiRequests, API.successRate);
  assert.equal(rateUrl.searchParams.get('window'), window, `the page asks success-rate for window ${window}: ${rateUrl}`);
  assert.equal(rateUrl.searchParams.get('namespace'), namespace ?? null, `the page asks success-rate for namespace ${namespace}: ${rateUrl}`);
  const rate = await apiOk(`${API.successRate}?${qs({ window, namespace })}`);
  for (const field of ['started', 'completed', 'failed', 'timed_out', 'in_progress', 'success_rate']) {
    const el = page.locator(`[data-total="${field}"]`);
    assert.equal(await el.count(), 1, `one [data-total="${field}"]`);
    const shown = await attr(el, 'data-value');
    const want = rate.totals[field];
    if (field === 'success_rate') {
      if (want === null) assert.equal(shown, '', `${window}/${namespace}: success_rate is null, the page shows ${shown}`);
      else assert.ok(Math.abs(Number(shown) - want) < 1e-12, `${window}/${namespace}: success_rate ${shown} vs the API's ${want}`);
      const text = await el.innerText();
      if (want !== null) {
        const n = Number((/[0-9]+(?:\.[0-9]+)?/.exec(text) || [])[0]);
        assert.ok(Math.abs(n / 100 - want) < 0.0051 || Math.abs(n - want) < 1e-9, `success rate text ${JSON.stringify(text)} vs ${want}`);
      }
    } else {
      assert.equal(Number(shown), want, `${window}/${namespace}: ${field} data-value ${shown} vs the API's ${want}`);
      assert.ok(digits(await el.innerText()).includes(String(want)), `${field} text ${JSON.stringify(await el.innerText())} shows ${want}`);
    }
  }

  // Failures by phase.
  const failUrl = lastRequest(apiRequests, API.failures);
  assert.equal(failUrl.searchParams.get('window'), window, `failures for window ${window}: ${failUrl}`);
  assert.equal(failUrl.searchParams.get('namespace'), namespace ?? null, `failures for namespace ${namespace}: ${failUrl}`);
  const failures = await apiOk(`${API.failures}?${qs({ window, namespace, limit: failUrl.searchParams.get('limit') })}`);
  const shownFailures = await page
    .locator('figure[data-chart="failures"] tr[data-outcome][data-phase]')
    .evaluateAll((rows) =>
      rows.map((r) => `${r.dataset.outcome}/${r.dataset.phase}=${r.querySelector('td[data-field="count"]')?.textContent.replace(/[^0-9]/g, '')}`),
    );
  const wantFailures = failures.items.map((g) => `${g.outcome}/${g.phase ?? ''}=${g.count}`);
  assert.deepEqual([...shownFailures].sort(), [...wantFailures].sort(), `${window}/${namespace}: failures table vs the API`);

  // Retries.
  const retryUrl = lastRequest(apiRequests, API.retries);
  assert.equal(retryUrl.searchParams.get('window'), window, `retries for window ${window}: ${retryUrl}`);
  assert.equal(retryUrl.searchParams.get('namespace'), namespace ?? null, `retries for namespace ${namespace}: ${retryUrl}`);
  const retries = await apiOk(`${API.retries}?${qs({ window, namespace, limit: retryUrl.searchParams.get('limit') })}`);
  const shownRetries = await page.locator('section#retries tr[data-fingerprint]').evaluateAll((rows) =>
    rows.map((r) => `${r.dataset.fingerprint}=${r.querySelector('td[data-field="attempts"]')?.textContent.replace(/[^0-9]/g, '')}`),
  );
  const wantRetries = retries.items.map((g) => `${g.alert_fingerprint}=${g.attempts}`);
  assert.deepEqual(shownRetries, wantRetries, `${window}/${namespace}: retries list vs the API (same order)`);
  return { totals: rate.totals, failures: wantFailures.length, retries: wantRetries.length };
}

test('the overview shows the numbers the API answers, for every window and a namespace', async () => {
  const cases = WINDOWS.map((w) => [w, undefined]);
  const { items } = await fleet();
  const namespaces = [...new Set(items.map((r) => r.namespace))].sort();
  assert.ok(namespaces.length >= 3, `several namespaces seeded: ${namespaces}`);
  cases.push(['7d', namespaces[0]], ['90d', namespaces[1]]);
  const started = [];
  for (const [window, namespace] of cases) {
    await withPage({ token: TOKENS.reader }, async ({ page, apiRequests }) => {
      await load(page, `/?${qs({ window, namespace })}`);
      // The filters show the state of the URL.
      assert.equal(await page.locator('form#filters select#window').inputValue(), window);
      assert.equal(await page.locator('form#filters input#namespace').inputValue(), namespace ?? '');
      const seen = await checkOverviewNumbers(page, apiRequests, window, namespace);
      console.log(`overview ${window}${namespace ? ` ${namespace}` : ''}: ${JSON.stringify(seen.totals)}, ${seen.failures} failure groups, ${seen.retries} retried alerts: as the API answers`);
      if (window === '90d' && !namespace) {
        assert.ok(seen.totals.started >= 60 && seen.failures > 0 && seen.retries > 0, 'the 90d overview has data to compare');
      }
      if (!namespace) started.push(seen.totals.started);
    });
  }
  // The seed spreads its remediations so that each window holds more than the last.
  assert.ok(started.every((n, i) => i === 0 || n > started[i - 1]), `started by window ${WINDOWS}: ${started}`);
});

test('the filters form changes the window and namespace through the URL', async () => {
  const { items } = await fleet();
  const namespace = items[0].namespace;
  await withPage({ token: TOKENS.reader }, async ({ page, apiRequests }) => {
    await load(page, '/');
    // The default window is 7d.
    assert.equal(await page.locator('select#window').inputValue(), '7d');
    await page.locator('select#window').selectOption('30d');
    await page.locator('input#namespace').fill(namespace);
    const asked = (u) => {
      const url = new URL(u);
      return url.pathname === API.successRate && url.searchParams.get('window') === '30d' && url.searchParams.get('namespace') === namespace;
    };
    await Promise.all([
      page.waitForURL((u) => u.searchParams.get('window') === '30d' && u.searchParams.get('namespace') === namespace),
      page.waitForResponse((r) => asked(r.url())),
      page.locator('input#namespace').press('Enter'),
    ]);
    assert.equal(await settled(page), 'ready');
    await checkOverviewNumbers(page, apiRequests, '30d', namespace);
  });
});

test('every chart has a table view and a CSV download of the same data', async () => {
  await withPage({ token: TOKENS.reader }, async ({ page }) => {
    await load(page, '/?window=90d');
    for (const chart of ['success-rate', 'outcomes', 'durations', 'failures']) {
      const figure = page.locator(`figure[data-chart="${chart}"]`);
      assert.equal(await figure.count(), 1, `one figure[data-chart="${chart}"]`);
      const toggle = figure.locator('button[data-action="table"]');
      assert.equal(await toggle.count(), 1, `${chart}: a table button`);
      // The table view: what the button controls, else the figure's table
      // that is not the chart's legend (uPlot draws its legend as a table).
      const controls = await attr(toggle, 'aria-controls');
      const table = controls ? page.locator(`[id="${controls}"] table`) : figure.locator('table:not(.u-legend)');
      assert.equal(await table.isVisible(), false, `${chart}: the table view starts hidden`);
      await toggle.click();
      await table.first().waitFor({ state: 'visible' });
      const rows = await table.first().locator('tbody tr').count();
      assert.ok(rows > 0, `${chart}: the table view has rows`);
      const link = figure.locator('a[data-action="csv"]');
      assert.equal(await link.count(), 1, `${chart}: a CSV link`);
      assert.notEqual(await attr(link, 'download'), null, `${chart}: the CSV link has a download attribute`);
      const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
      const lines = parseCsv(readFileSync(await download.path(), 'utf8'));
      assert.ok(lines.length >= 2, `${chart}: the CSV has a header and data: ${JSON.stringify(lines.slice(0, 3))}`);
      assert.equal(lines.length - 1, rows, `${chart}: the CSV has as many data lines (${lines.length - 1}) as the table has rows (${rows})`);
      assert.ok(lines.every((l) => l.length === lines[0].length), `${chart}: every CSV line has ${lines[0].length} fields`);
      if (chart === 'failures') {
        // The same data as the API's: the counts by outcome and phase.
        const col = (name) => lines[0].indexOf(name);
        assert.ok(col('count') >= 0 && col('outcome') >= 0 && col('phase') >= 0, `failures CSV columns: ${lines[0]}`);
        const failures = await apiOk(`${API.failures}?window=90d`);
        assert.deepEqual(
          lines.slice(1).map((l) => `${l[col('outcome')]}/${l[col('phase')]}=${l[col('count')]}`).sort(),
          failures.items.map((g) => `${g.outcome}/${g.phase ?? ''}=${g.count}`).sort(),
          'the failures CSV holds the API\'s counts',
        );
      }
      if (chart === 'success-rate' || chart === 'outcomes') {
        // Every bucket up to now, with the API's counts (the page asks for 1d buckets at 90d).
        const col = (name) => lines[0].indexOf(name);
        const rate = await apiOk(`${API.successRate}?window=90d&bucket=1d`);
        const buckets = rate.series.filter((b) => new Date(b.since).getTime() <= Date.now());
        const row = (since, started, completed, failed, timedOut) => `${since} ${started}/${completed}/${failed}/${timedOut}`;
        assert.deepEqual(
          lines.slice(1).map((l) => row(l[col('since')], l[col('started')], l[col('completed')], l[col('failed')], l[col('timed_out')])),
          buckets.map((b) => row(b.since, b.started, b.completed, b.failed, b.timed_out)),
          `${chart}: the CSV holds the API's series`,
        );
      }
      if (chart === 'durations') {
        // Each slice's figures are the API's durations over that slice.
        const col = (name) => lines[0].indexOf(name);
        assert.ok(['since', 'until', 'final_phase', 'count', 'p50_seconds', 'p99_seconds'].every((c) => col(c) >= 0), `durations CSV columns: ${lines[0]}`);
        const slices = new Map();
        for (const l of lines.slice(1)) slices.set(`${l[col('since')]}|${l[col('until')]}`, [...(slices.get(`${l[col('since')]}|${l[col('until')]}`) ?? []), l]);
        assert.ok(slices.size > 0, 'the durations CSV has slices');
        for (const [key, rows] of slices) {
          const [since, until] = key.split('|');
          const report = await apiOk(`${API.durations}?${qs({ since, until })}`);
          const fromApi = report.phases.filter((p) => p.final_phase !== 'all').map((p) => `${p.final_phase} ${p.count} ${p.p50_seconds} ${p.p99_seconds}`);
          assert.deepEqual(rows.map((l) => `${l[col('final_phase')]} ${l[col('count')]} ${Number(l[col('p50_seconds')])} ${Number(l[col('p99_seconds')])}`), fromApi, `durations ${since} to ${until}`);
        }
      }
      assert.match(download.suggestedFilename(), /\.csv$/, `${chart}: a .csv file name`);
      // The button toggles back.
      await toggle.click();
      await table.first().waitFor({ state: 'hidden' });
    }
  });
});

test('overview -> retried alert post-mortem -> remediation timeline, by clicking', async () => {
  await withPage({ token: TOKENS.reader }, async ({ page, apiRequests }) => {
    await load(page, '/?window=7d');
    const row = page.locator('section#retries tr[data-fingerprint]').first();
    const fp = await attr(row, 'data-fingerprint');
    await Promise.all([page.waitForURL(/\/postmortem\?/), row.locator('a.postmortem-link').click()]);
    assert.equal(new URL(page.url()).searchParams.get('fingerprint'), fp, 'the post-mortem of the clicked alert');
    await page.locator('tr[data-remediation-id]').first().waitFor({ state: 'attached', timeout: STATE_TIMEOUT });
    assert.equal(await settled(page), 'ready');

    // Every remediation of the alert in the window, newest first.
    const asked = lastRequest(apiRequests, API.postmortem);
    assert.equal(asked.searchParams.get('alert_fingerprint'), fp, `the page asks the post-mortem of ${fp}: ${asked}`);
    const windowParam = asked.searchParams.get('window');
    const pm = await apiOk(`${API.postmortem}?${qs({ alert_fingerprint: fp, window: windowParam, limit: 1000 })}`);
    const ids = await page.locator('tr[data-remediation-id]').evaluateAll((rows) => rows.map((r) => Number(r.dataset.remediationId)));
    assert.deepEqual(ids, pm.items.map((i) => i.id), `post-mortem rows vs the API's (window ${windowParam})`);
    const starts = pm.items.map((i) => Date.parse(i.start_time));
    assert.deepEqual(starts, [...starts].sort((a, b) => b - a), 'newest first');
    const phases = await page.locator('tr[data-remediation-id] td[data-field="overall_phase"]').allInnerTexts();
    pm.items.forEach((item, i) => assert.match(phases[i], new RegExp(item.overall_phase, 'i'), `row ${i} phase`));
    assert.ok(pm.items.length >= 2, 'a retried alert has several remediations');

    const id = pm.items[0].id;
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/remediation' && u.searchParams.get('id') === String(id)),
      page.locator(`tr[data-remediation-id="${id}"] a.remediation-link[href="/remediation?id=${id}"]`).click(),
    ]);
    await page.locator('#gantt [data-phase]').first().waitFor({ state: 'attached', timeout: STATE_TIMEOUT });
    assert.equal(await settled(page), 'ready');
    await shoot(page, 'click-through-remediation-1280-light');
  });
});

test('a remediation page shows its timeline, snapshots, failure, duplicates and hold', async () => {
  const failed = await pickRemediation((r) => r.overall_phase === 'failed' && r.duplicate_count > 0 && r.service_crd_statuses, 'failed after duplicates');
  const timedOut = await pickRemediation((r) => r.overall_phase === 'timeout', 'timed out');
  for (const r of [failed, timedOut]) {
    const detail = await apiOk(API.item(r.id));
    await withPage({ token: TOKENS.reader }, async ({ page }) => {
      await load(page, `/remediation?id=${r.id}`);
      const entered = [...new Set(detail.timeline.map((e) => e.overall_phase))].filter((p) => !['completed', 'failed', 'timeout'].includes(p));
      for (const phase of entered) {
        assert.ok((await page.locator(`#gantt [data-phase="${phase}"]`).count()) >= 1, `remediation ${r.id}: a ${phase} bar in the Gantt strip`);
      }
      const children = Object.keys(detail.remediation.service_crd_statuses || {});
      assert.ok(children.length > 0);
      assert.ok((await page.locator('#crd-statuses tbody tr').count()) >= children.length, `remediation ${r.id}: a row per child status`);
      const text = async (field) => (await page.locator(`[data-field="${field}"]`).first().innerText()).trim();
      if (r.overall_phase === 'failed') {
        assert.match(await text('failure_phase'), new RegExp(detail.remediation.failure_phase));
        assert.ok((await text('failure_reason')).includes(detail.remediation.failure_reason), 'the failure reason, whole');
      }
      assert.equal(digits(await text('duplicate_count')), String(detail.remediation.duplicate_count));
      assert.equal((await text('legal_hold')).toLowerCase(), detail.remediation.legal_hold ? 'yes' : 'no');
      if (r.overall_phase === 'timeout') {
        assert.ok((await page.locator('main').innerText()).includes(detail.remediation.timeout_phase), 'the timeout phase is shown');
      }
      // Each child's row names its resource and shows its start time as a
      // time (not only inside a JSON dump of the snapshot).
      const names = {
        remediationProcessing: detail.remediation.remediation_processing_name,
        aiAnalysis: detail.remediation.ai_analysis_name,
        workflowExecution: detail.remediation.workflow_execution_name,
      };
      const rowTexts = await page.locator('#crd-statuses tbody tr').allInnerTexts();
      for (const child of children) {
        const snap = detail.remediation.service_crd_statuses[child];
        const row = rowTexts.find((t) => t.includes(child));
        assert.ok(row, `remediation ${r.id}: a #crd-statuses row for ${child}: ${JSON.stringify(rowTexts)}`);
        const outsideJson = row.replace(/\{[^]*\}/g, '');
        if (names[child]) assert.ok(outsideJson.includes(names[child]), `remediation ${r.id}: the ${child} row names its resource ${names[child]}: ${JSON.stringify(row)}`);
        assert.ok(outsideJson.includes(snap.phase), `remediation ${r.id}: the ${child} row shows its phase ${snap.phase}`);
        const hms = snap.startTime.slice(11, 19);
        assert.ok(outsideJson.includes(hms), `remediation ${r.id}: the ${child} row shows its start time ${snap.startTime} (${hms}) as a time: ${JSON.stringify(row)}`);
      }
    });
  }
});

test('bad search input gets the API\'s message; good input lists what the API lists, page by page', async () => {
  await withPage({ token: TOKENS.reader, allowStatus: [400] }, async ({ page, apiRequests }) => {
    // `since` that is not a time, straight from a pasted URL.
    await page.goto(new URL('/search?since=yesterday', BASE).href);
    await settled(page);
    const notTime = await api(`${API.list}?since=yesterday`);
    assert.equal(notTime.status, 400);
    const err = page.locator('#search-error');
    await err.filter({ hasText: notTime.body.detail }).waitFor({ state: 'visible', timeout: STATE_TIMEOUT });
    assert.equal(await attr(err, 'role'), 'alert');
    console.log(`search error (since=yesterday): ${(await err.innerText()).trim()}`);
    await shoot(page, 'search-error-1280-light');

    // `until` before `since`, through the form.
    await page.goto(new URL('/search', BASE).href);
    await settled(page);
    await page.locator('#s-since').fill('2026-11-20T00:00:00Z');
    await page.locator('#s-until').fill('2026-11-10T00:00:00Z');
    await Promise.all([
      page.waitForURL((u) => u.searchParams.get('since') === '2026-11-20T00:00:00Z'),
      page.locator('form#search-form [type="submit"]').click(),
    ]);
    const backwards = await api(`${API.list}?${qs({ since: '2026-11-20T00:00:00Z', until: '2026-11-10T00:00:00Z' })}`);
    assert.equal(backwards.status, 400);
    await err.filter({ hasText: backwards.body.detail }).waitFor({ state: 'visible', timeout: STATE_TIMEOUT });
    console.log(`search error (until before since): ${(await err.innerText()).trim()}`);
  });

  // A good search: rows as the API lists them, and the next pages by their cursor.
  const { items } = await fleet();
  const from = new Date(Date.now() - 85 * 86_400_000).toISOString().replace(/\.\d+Z$/, 'Z');
  await withPage({ token: TOKENS.reader }, async ({ page, apiRequests }) => {
    await page.goto(new URL('/search', BASE).href);
    await settled(page);
    await page.locator('#s-since').fill(from);
    await Promise.all([
      page.waitForURL((u) => u.searchParams.get('since') === from),
      page.locator('form#search-form [type="submit"]').click(),
    ]);
    const rows = page.locator('table#results tbody tr[data-remediation-id]');
    await rows.first().waitFor({ state: 'attached', timeout: STATE_TIMEOUT });
    assert.equal(await settled(page), 'ready');
    let asked = lastRequest(apiRequests, API.list);
    assert.equal(asked.searchParams.get('since'), from);
    let answer = await apiOk(asked.pathname + asked.search);
    let shown = await rows.evaluateAll((rs) => rs.map((r) => Number(r.dataset.remediationId)));
    assert.deepEqual(shown, answer.items.map((i) => i.id), 'search results vs the API');
    const seen = [...shown];
    let pages = 1;
    while (answer.next_cursor) {
      const next = page.locator('a#next-page');
      assert.equal(await next.count(), 1, 'a next-page link when the API has more');
      await Promise.all([page.waitForURL((u) => u.searchParams.get('cursor') === answer.next_cursor), next.click()]);
      await page.locator(`table#results tbody tr[data-remediation-id]`).first().waitFor({ state: 'attached' });
      assert.equal(await settled(page), 'ready');
      asked = lastRequest(apiRequests, API.list);
      assert.equal(asked.searchParams.get('cursor'), answer.next_cursor, 'the next page asks with the cursor');
      const expected = await apiOk(asked.pathname + asked.search);
      await page.locator(`table#results tbody tr[data-remediation-id="${expected.items[0].id}"]`).waitFor({ state: 'attached' });
      shown = await rows.evaluateAll((rs) => rs.map((r) => Number(r.dataset.remediationId)));
      assert.deepEqual(shown, expected.items.map((i) => i.id), `search page ${pages + 1} vs the API`);
      answer = expected;
      seen.push(...shown);
      pages += 1;
    }
    assert.equal(await page.locator('a#next-page').count(), 0, 'no next-page link on the last page');
    assert.equal(new Set(seen).size, items.length, `the pages together list every remediation once (${seen.length} rows, ${items.length} remediations)`);
    assert.ok(pages >= 2, 'the search was long enough to page');
    console.log(`search since=${from}: ${pages} pages, ${seen.length} rows, as the API lists them`);
  });

  // Every filter of the form reaches the API: one remediation by fingerprint, name and phase.
  const one = items.find((r) => r.overall_phase === 'completed');
  const since = new Date(Date.parse(one.start_time) - 60_000).toISOString();
  const until = new Date(Date.parse(one.start_time) + 60_000).toISOString();
  const query = { fingerprint: one.alert_fingerprint, name: one.remediation_name, namespace: one.namespace, phase: 'completed', since, until };
  await withPage({ token: TOKENS.reader }, async ({ page, apiRequests }) => {
    await load(page, `/search?${qs(query)}`);
    await page.locator(`table#results tbody tr[data-remediation-id="${one.id}"]`).waitFor({ state: 'attached' });
    assert.equal(await page.locator('table#results tbody tr[data-remediation-id]').count(), 1);
    const asked = lastRequest(apiRequests, API.list);
    assert.deepEqual(
      Object.fromEntries(['alert_fingerprint', 'remediation_name', 'namespace', 'overall_phase', 'since', 'until'].map((k) => [k, asked.searchParams.get(k)])),
      { alert_fingerprint: one.alert_fingerprint, remediation_name: one.remediation_name, namespace: one.namespace, overall_phase: 'completed', since, until },
      'the form state (from the URL) goes to the API',
    );
    // ... and shows in the form.
    assert.equal(await page.locator('#s-fingerprint').inputValue(), one.alert_fingerprint);
    assert.equal(await page.locator('#s-name').inputValue(), one.remediation_name);
    assert.equal(await page.locator('select#s-phase').inputValue(), 'completed');
  });
});

test('a reader sees no admin actions; an admin puts a legal hold with a reason, then releases it', async () => {
  const target = await pickRemediation((r) => r.overall_phase === 'completed' && !r.legal_hold, 'completed');
  await withPage({ token: TOKENS.reader }, async ({ page }) => {
    await load(page, `/remediation?id=${target.id}`);
    assert.equal(await page.locator('#admin-actions').count(), 0, 'a reader has no #admin-actions in the DOM');
    assert.equal(await page.locator('button[data-action="hold"], button[data-action="delete"]').count(), 0);
  });

  const reason = `INC-4242: keep rr ${target.id} for the post-incident review`;
  await withPage({ token: TOKENS.admin }, async ({ page }) => {
    await load(page, `/remediation?id=${target.id}`);
    const actions = page.locator('section#admin-actions');
    await actions.waitFor({ state: 'visible' });
    assert.equal((await page.locator('[data-field="legal_hold"]').innerText()).trim().toLowerCase(), 'no');
    await page.locator('input#admin-reason').fill(reason);
    await page.locator('button[data-action="hold"]').click();
    await page.locator('[data-field="legal_hold"]', { hasText: /^\s*yes\s*$/i }).waitFor({ timeout: STATE_TIMEOUT });
    const results = await page.locator('#admin-result').allInnerTexts();
    assert.ok(results.some((t) => t.trim().length > 0), '#admin-result says what happened');
    console.log(`admin hold: #admin-result says ${JSON.stringify(results)}`);
    // Checked at the end, so that the rest of the flow still runs: ids are unique.
    const resultsAfterHold = results.length;
    await shoot(page, 'remediation-admin-held-1280-light');

    // The API agrees, and the admin log kept the reason.
    const held = await apiOk(API.item(target.id));
    assert.equal(held.remediation.legal_hold, true, 'the API says the remediation is held');
    const log = await apiOk(`${API.adminLog}?limit=20`, { token: TOKENS.admin });
    const entry = log.items.find((e) => e.action === 'hold' && e.target === target.id);
    assert.ok(entry, `the admin log has the hold: ${JSON.stringify(log.items.slice(0, 3))}`);
    assert.equal(entry.reason, reason);

    // A reload shows the hold too (it comes from the API, not from memory).
    await load(page, `/remediation?id=${target.id}`);
    assert.equal((await page.locator('[data-field="legal_hold"]').innerText()).trim().toLowerCase(), 'yes');

    // Release it again.
    await page.locator('input#admin-reason').fill(`INC-4242 closed: release rr ${target.id}`);
    await page.locator('button[data-action="release"]').click();
    await page.locator('[data-field="legal_hold"]', { hasText: /^\s*no\s*$/i }).waitFor({ timeout: STATE_TIMEOUT });
    assert.equal((await apiOk(API.item(target.id))).remediation.legal_hold, false, 'the API says released');
    assert.equal(resultsAfterHold, 1, `one #admin-result after the hold, not ${resultsAfterHold} (an id must be unique)`);
  });
});

test('the token flow: no token asks for one, a wrong one is a 401, a writer\'s a 403, a reader\'s works', async () => {
  await withPage({ allowStatus: [401, 403] }, async ({ page }) => {
    await load(page, '/?window=7d', 'auth');
    const form = page.locator('form#token-form');
    await form.waitFor({ state: 'visible' });
    assert.ok((await page.locator('#auth-message').innerText()).trim().length > 0, 'the page says why it needs a token');
    assert.equal(await form.locator('input#token').count(), 1);
    await shoot(page, 'token-form-1280-light');
    const noToken = (await page.locator('#auth-message').innerText()).trim();
    console.log(`no token: ${JSON.stringify(noToken)}`);

    // A token nobody issued: 401.
    const unknown = `rmt_${'A'.repeat(43)}`;
    assert.equal((await api(API.list, { token: unknown })).status, 401);
    await form.locator('input#token').fill(unknown);
    // The page tries the token on the API, which answers 401.
    await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname.startsWith('/api/') && r.status() === 401),
      form.locator('[type="submit"], button:not([type])').first().click(),
    ]);
    assert.equal(await settled(page), 'auth', 'still asking for a token');
    // The message now says the token was refused: it changes, or it says so.
    const escaped = noToken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    await page
      .locator('#auth-message')
      .filter({ hasNotText: new RegExp(`^\\s*${escaped}\\s*$`) })
      .filter({ hasText: /\S/ })
      .waitFor({ state: 'visible', timeout: 5000 })
      .catch(() => {});
    const wrong = (await page.locator('#auth-message').innerText()).trim();
    console.log(`wrong token: ${JSON.stringify(wrong)}`);
    assert.ok(
      wrong !== noToken || /401|invalid|not valid|unknown|expired|refused|rejected|wrong|not accepted/i.test(wrong),
      `a refused token gets its own message, not the same as no token: ${JSON.stringify(wrong)}`,
    );
    assert.equal(await page.locator('form#token-form').isVisible(), true, 'the form stays for another try');
  });

  await withPage({ allowStatus: [401, 403] }, async ({ page }) => {
    await load(page, '/?window=7d', 'auth');
    // A writer may send records but not read them: 403, naming the role needed.
    const noToken = (await page.locator('#auth-message').innerText()).trim();
    await page.locator('form#token-form input#token').fill(TOKENS.writer);
    await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname.startsWith('/api/') && r.status() === 403),
      page.locator('form#token-form').locator('[type="submit"], button:not([type])').first().click(),
    ]);
    assert.equal(await settled(page), 'auth', 'a 403 asks for another token');
    const forbidden = (await page.locator('#auth-message').innerText()).trim();
    console.log(`writer token: ${JSON.stringify(forbidden)}`);
    assert.notEqual(forbidden, noToken, 'a 403 gets its own message');
    assert.match(forbidden, /reader/i, 'the 403 message names the role needed');
    await shoot(page, 'token-forbidden-1280-light');

    // A reader's token: the overview appears, and the token is kept for the tab.
    const form = page.locator('form#token-form');
    if (!(await form.isVisible())) {
      assert.fail('after a 403 the page offers no way to give another token (form#token-form is hidden)');
    }
    await form.locator('input#token').fill(TOKENS.reader);
    await form.locator('[type="submit"], button:not([type])').first().click();
    await page.locator('body[data-state="ready"]').waitFor({ state: 'attached', timeout: STATE_TIMEOUT });
    await page.locator('[data-total="started"]').waitFor({ state: 'attached' });
    assert.equal(await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY), TOKENS.reader);
    // ... and survives navigation in the same tab.
    await load(page, '/search');
  });
});

test('an admin soft-deletes a remediation after confirming, with a reason', async () => {
  // Last: it changes the numbers the other tests compare.
  const victim = await pickRemediation((r) => r.overall_phase === 'timeout' && !r.legal_hold, 'timed out');
  // The page reads the remediation again after deleting it: the API's 404
  // is expected (the browser logs it), and the page says it is gone.
  await withPage({ token: TOKENS.admin, allowStatus: [404] }, async (watched) => {
    const { page } = watched;
    await load(page, `/remediation?id=${victim.id}`);
    await page.locator('input#admin-reason').fill(`duplicate test record ${victim.id}, removed by the browser test`);
    watched.acceptDialogs = true;
    await page.locator('button[data-action="delete"]').click();
    await page.locator('#admin-result').filter({ hasText: /\S/ }).first().waitFor({ timeout: STATE_TIMEOUT });
    assert.equal(watched.dialogs.length, 1, `delete asks once: ${watched.dialogs}`);
    assert.match(watched.dialogs[0], /^confirm:/, 'delete asks confirm() first');
    console.log(`admin delete: ${JSON.stringify(watched.dialogs[0])}, #admin-result says ${JSON.stringify((await page.locator('#admin-result').first().innerText()).trim())}`);
    assert.equal(await page.locator('#gantt').count(), 0, 'the deleted remediation is no longer drawn');
    await shoot(page, 'remediation-admin-deleted-1280-light');
    const after = await api(API.item(victim.id));
    assert.equal(after.status, 404, `the API no longer answers the deleted remediation: ${after.status}`);
    const log = await apiOk(`${API.adminLog}?limit=20`, { token: TOKENS.admin });
    assert.ok(log.items.some((e) => e.action === 'delete' && e.target === victim.id), 'the admin log has the delete');
  });
});
