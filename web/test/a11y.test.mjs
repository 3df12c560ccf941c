// Accessibility of every page, checked by axe-core (the WCAG 2.0/2.1 A and
// AA rules, colour contrast included) in Debian's headless Chromium, in
// light and dark, at 1280 and 390 pixels, against the service and seed that
// scripts/web-test starts (the same environment as dashboard.test.mjs).
//
// axe runs as a script injected into the page, which the dashboard's own
// Content-Security-Policy forbids (as it should): these contexts alone
// bypass it. dashboard.test.mjs checks the pages under the policy.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

import { CHROMIUM, TOKEN_KEY } from './firstpaint.mjs';

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const BASE = process.env.REMAUDIT_WEB_BASE_URL;
const ADMIN = process.env.REMAUDIT_WEB_ADMIN_TOKEN;
const READER = process.env.REMAUDIT_WEB_READER_TOKEN;

let browser;
before(async () => {
  assert.ok(BASE && ADMIN && READER, 'set REMAUDIT_WEB_BASE_URL and the tokens (scripts/web-test does)');
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
});
after(async () => {
  await browser?.close();
});

async function apiGet(path) {
  const res = await fetch(new URL(path, BASE), { headers: { authorization: `Bearer ${READER}` } });
  assert.equal(res.status, 200, path);
  return res.json();
}

/** The axe violations of `path` once it has drawn (`body[data-state]` not loading). */
async function violations(path, { token, width, scheme, state = 'ready' }) {
  const context = await browser.newContext({ viewport: { width, height: 900 }, colorScheme: scheme, bypassCSP: true });
  try {
    if (token) await context.addInitScript(([k, t]) => sessionStorage.setItem(k, t), [TOKEN_KEY, token]);
    const page = await context.newPage();
    await page.goto(new URL(path, BASE).href);
    await page.waitForSelector(`body[data-state="${state}"]`, { timeout: 30_000 });
    await page.addScriptTag({ content: AXE });
    const result = await page.evaluate(() =>
      // eslint-disable-next-line no-undef
      axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }),
    );
    return result.violations.map((v) => `${v.id} (${v.impact}): ${v.help}; ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
  } finally {
    await context.close();
  }
}

test('every page meets WCAG 2.1 A and AA as axe-core checks it, light and dark, wide and narrow', async () => {
  const list = await apiGet('/api/v1/audit/remediation-orchestration?overall_phase=failed&limit=1');
  const failed = list.items[0];
  assert.ok(failed, 'the seed has a failed remediation');
  const pages = [
    ['/?window=7d', ADMIN],
    ['/?window=90d', READER],
    [`/postmortem?fingerprint=${encodeURIComponent(failed.alert_fingerprint)}&window=90d`, READER],
    [`/remediation?id=${failed.id}`, ADMIN],
    ['/search?phase=failed', READER],
    ['/search?since=yesterday', READER],
  ];
  const problems = [];
  for (const width of [1280, 390]) {
    for (const scheme of ['light', 'dark']) {
      for (const [path, token] of pages) {
        for (const v of await violations(path, { token, width, scheme })) problems.push(`${path} ${width}px ${scheme}: ${v}`);
      }
      for (const v of await violations('/', { token: null, width, scheme, state: 'auth' })) problems.push(`token form ${width}px ${scheme}: ${v}`);
    }
  }
  assert.deepEqual(problems, [], `accessibility problems:\n${problems.join('\n')}`);
});
