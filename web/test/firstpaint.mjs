// First paint of a dashboard page, as the browser measures it: the
// first-contentful-paint entry of the Paint Timing API, and the time until
// the page declares itself drawn (`body[data-state="ready"]`), both in
// milliseconds from the start of navigation. Shared by the browser test
// (test/dashboard.test.mjs, which prints them) and the benchmark
// (bench/dashboard.mjs, scripts/bench-dashboard). A library: running it
// does nothing.

/** The Chromium the tests drive: Debian's package, never a downloaded one. */
export const CHROMIUM = process.env.REMAUDIT_WEB_CHROMIUM || '/usr/bin/chromium';

/** The key under which the pages keep the API token. */
export const TOKEN_KEY = 'remaudit.token';

/**
 * Runs in every document before the page's own scripts: stores the token
 * (when given) where the page looks for it, and records `performance.now()`
 * the moment `body[data-state]` first becomes `ready`, in
 * `window.__remauditReadyAt`.
 */
export function probe({ token, key }) {
  try {
    if (token) sessionStorage.setItem(key, token);
  } catch {
    // about:blank and other opaque origins have no session storage.
  }
  const mark = () => {
    if (window.__remauditReadyAt === undefined && document.body && document.body.dataset.state === 'ready') {
      window.__remauditReadyAt = performance.now();
    }
  };
  new MutationObserver(mark).observe(document, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: ['data-state'],
  });
}

/** The page's first-contentful-paint time, waiting (up to `ms`) for the entry. */
export async function firstContentfulPaint(page, ms = 5000) {
  return page.evaluate(
    (ms) =>
      new Promise((resolve) => {
        const find = (entries) => entries.find((e) => e.name === 'first-contentful-paint');
        const now = find(performance.getEntriesByType('paint'));
        if (now) return resolve(now.startTime);
        const timer = setTimeout(() => resolve(null), ms);
        new PerformanceObserver((list, observer) => {
          const e = find(list.getEntries());
          if (e) {
            clearTimeout(timer);
            observer.disconnect();
            resolve(e.startTime);
          }
        }).observe({ type: 'paint', buffered: true });
      }),
    ms,
  );
}

/** `{ fcp, ready }` of a page that has reached `body[data-state="ready"]`. */
export async function paintTimes(page) {
  const fcp = await firstContentfulPaint(page);
  const ready = await page.evaluate(() => window.__remauditReadyAt ?? null);
  return { fcp, ready };
}

/** The page's slowest API request so far: `{ path, ms }` (resource timing), or null. */
export async function slowestApi(page) {
  return page.evaluate(() => {
    const api = performance
      .getEntriesByType('resource')
      .filter((e) => new URL(e.name).pathname.startsWith('/api/'))
      .map((e) => ({ path: new URL(e.name).pathname + new URL(e.name).search, ms: e.duration }));
    return api.sort((a, b) => b.ms - a.ms)[0] ?? null;
  });
}

/**
 * Opens `url` in a fresh context (nothing cached), waits for the page to be
 * ready (`timeout` ms) and answers `{ fcp, ready, slowest }`, plus what
 * `inspect(page)` answers as `inspected`. A page that ends in another state
 * throws, with its text.
 */
export async function measure(browser, url, { token, width = 1280, height = 900, timeout = 60_000, inspect } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  try {
    await context.addInitScript(probe, { token, key: TOKEN_KEY });
    const page = await context.newPage();
    await page.goto(url, { waitUntil: 'commit' });
    const settled = page.locator('body:not([data-state="loading"])');
    await settled.waitFor({ state: 'attached', timeout });
    const state = await page.evaluate(() => document.body.dataset.state);
    if (state !== 'ready') {
      const text = (await page.locator('main').innerText().catch(() => '')).slice(0, 500);
      throw new Error(`${url}: the page ended in state ${state}: ${text}`);
    }
    const times = await paintTimes(page);
    const slowest = await slowestApi(page);
    const inspected = inspect ? await inspect(page) : undefined;
    return { ...times, slowest, inspected };
  } finally {
    await context.close();
  }
}

/** Median and maximum of numbers (nulls left out). */
export function summary(values) {
  const v = values.filter((x) => typeof x === 'number').sort((a, b) => a - b);
  if (v.length === 0) return { median: null, max: null, n: 0 };
  const mid = Math.floor(v.length / 2);
  const median = v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  return { median, max: v[v.length - 1], n: v.length };
}

export const ms = (x) => (x === null || x === undefined ? 'n/a' : `${Math.round(x)} ms`);
