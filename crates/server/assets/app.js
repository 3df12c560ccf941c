// remaudit dashboard: draws each page from the public API (/api/v1) with the
// caller's token. No framework: DOM built with `h`, text always set as text
// (never parsed as HTML), so a record's content cannot inject markup.
// Every page's state is in its URL, so a view can be pasted into a channel.
import uPlot from "/assets/vendor/uplot/uPlot.esm.js";

const TOKEN_KEY = "remaudit.token";
/** What a bearer token may hold: printable ASCII, no spaces (an HTTP header value). */
const TOKEN_SHAPE = /^[\x21-\x7e]{1,4096}$/;
const WINDOWS = ["24h", "7d", "30d", "90d"];
const PHASES = ["pending", "processing", "analyzing", "executing", "completed", "failed", "timeout"];
const API = "/api/v1";
const AUDIT = `${API}/audit/remediation-orchestration`;
const ANALYTICS = `${API}/audit/analytics`;
/// Durations over time: how many slices each window is cut into.
const DURATION_SLICES = { "24h": 6, "7d": 7, "30d": 10, "90d": 15 };
/// Success-rate series bucket per window.
const SERIES_BUCKET = { "24h": "1h", "7d": "6h", "30d": "1d", "90d": "1d" };

const main = document.getElementById("main");

// ---------------------------------------------------------------- helpers

/** An element with attributes, `on…` listeners and children (text, nodes, arrays, null). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the page's content (null children are skipped). */
function show(...children) {
  main.replaceChildren();
  append(main, children);
}

function setState(state) {
  document.body.dataset.state = state;
}

/** `2026-12-03 06:12:05 UTC` from an RFC 3339 time. */
function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

/** A duration in seconds, as `850 ms`, `42 s`, `3 m 12 s` or `2 h 05 m`. */
function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} m ${String(s % 60).padStart(2, "0")} s`;
  const m = Math.round(s / 60);
  if (m < 48 * 60) return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} m`;
  return `${(s / 86400).toFixed(1)} d`;
}

function fmtPercent(fraction) {
  return fraction === null || fraction === undefined ? "–" : `${(fraction * 100).toFixed(1)} %`;
}

function fmtCount(n) {
  return Number(n).toLocaleString("en-US");
}

function phaseClass(phase) {
  return `phase phase-${String(phase).replace(/[^a-z_-]/gi, "")}`;
}

function secondsBetween(a, b) {
  return (new Date(b).getTime() - new Date(a).getTime()) / 1000;
}

/** A query string of the non-empty values. */
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

let uniqueId = 0;
function nextId(prefix) {
  uniqueId += 1;
  return `${prefix}-${uniqueId}`;
}

// -------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Longest `Retry-After` the page waits out before retrying a 503 once. */
const MAX_RETRY_AFTER_MS = 10_000;

/**
 * Calls the API with the session's token; throws [`ApiError`] on any answer
 * but 2xx. A 503 of a read (the service shedding load) is retried once, after
 * its `Retry-After` (at most 10 s).
 */
async function api(path, params = {}, options = {}) {
  try {
    return await apiOnce(path, params, options);
  } catch (e) {
    const method = options.method || "GET";
    if (!(e instanceof ApiError) || e.status !== 503 || method !== "GET") throw e;
    const wait = Math.min(MAX_RETRY_AFTER_MS, 1000 * (Number.parseInt(e.retryAfter ?? "1", 10) || 1));
    await new Promise((resolve) => setTimeout(resolve, wait));
    return apiOnce(path, params, options);
  }
}

async function apiOnce(path, params, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path + query(params), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      // Same origin only: a client certificate (mutual TLS) goes along, as it
      // would for any other client of the API.
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, { title: "The service did not answer", detail: String(e.message || e) });
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const payload = type.includes("json") ? await response.json() : { detail: await response.text() };
  if (!response.ok) {
    const error = new ApiError(response.status, { title: response.statusText, ...payload });
    error.retryAfter = response.headers.get("retry-after");
    throw error;
  }
  return payload;
}

// ------------------------------------------------------------ tables, CSV

/**
 * A table: `columns` are `{key, label, num?, render?}`; each row is an object.
 * `rowAttrs(row)` adds attributes to its `<tr>` (data-… for tests and links).
 */
function table(columns, rows, { caption, rowAttrs, id } = {}) {
  // A wide table scrolls sideways on a narrow screen: the region takes the
  // keyboard focus so that it can be scrolled without a pointer.
  return h(
    "div",
    { class: "table-wrap", tabindex: 0, role: "region", "aria-label": caption || "table" },
    h(
      "table",
      { id },
      caption ? h("caption", { class: "muted" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
      h(
        "tbody",
        {},
        rows.length === 0
          ? h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "Nothing in this window."))
          : rows.map((row) =>
              h(
                "tr",
                rowAttrs ? rowAttrs(row) : {},
                columns.map((c) =>
                  h(
                    "td",
                    { class: c.num ? "num" : null, "data-field": c.key },
                    c.render ? c.render(row) : row[c.key] ?? "–",
                  ),
                ),
              ),
            ),
      ),
    ),
  );
}

function csvCell(value) {
  let s = value === null || value === undefined ? "" : String(value);
  // A spreadsheet would run a text cell starting with these as a formula;
  // numbers (such as -5) stay numbers.
  if (typeof value !== "number" && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  // `;` separates cells in some locales' spreadsheets: quoted too.
  return /[",;\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** CSV of the same rows a table shows: `csv` values of columns, raw data (not formatted). */
function csvHref(columns, rows) {
  const lines = [columns.map((c) => csvCell(c.key)).join(",")];
  for (const row of rows) {
    lines.push(columns.map((c) => csvCell(c.csv ? c.csv(row) : row[c.key])).join(","));
  }
  return `data:text/csv;charset=utf-8,${encodeURIComponent(`${lines.join("\r\n")}\r\n`)}`;
}

/**
 * A chart's figure: a caption with the table toggle and the CSV link, the
 * drawing (`draw(container)` once it is in the page), a sentence that says
 * what it shows, and the table of the same data.
 */
function figure({ key, title, summary, columns, rows, csvName, draw, body, rowAttrs }) {
  const tableId = nextId(`${key}-table`);
  const titleId = nextId(`${key}-title`);
  const tableView = h("div", { id: tableId, hidden: true }, table(columns, rows, { rowAttrs, caption: title }));
  const plot = draw ? h("div", { class: "plot", role: "img", "aria-label": `${title}: ${summary}` }) : null;
  const toggle = h(
    "button",
    {
      type: "button",
      "data-action": "table",
      "aria-expanded": "false",
      "aria-controls": tableId,
      onclick: () => {
        const showing = tableView.hidden;
        tableView.hidden = !showing;
        toggle.setAttribute("aria-expanded", String(showing));
        toggle.textContent = showing ? "Hide table" : "Show table";
      },
    },
    "Show table",
  );
  const fig = h(
    "figure",
    { class: "chart", "data-chart": key, "aria-labelledby": titleId },
    h(
      "figcaption",
      {},
      h("h2", { id: titleId }, title),
      toggle,
      h("a", { "data-action": "csv", href: csvHref(columns, rows), download: csvName }, "CSV"),
    ),
    plot,
    body || null,
    h("p", { class: "muted summary" }, summary),
    tableView,
  );
  if (draw) pendingDrawings.push(() => draw(plot));
  return fig;
}

// Charts are drawn once their container is in the page and has a width.
let pendingDrawings = [];
const livePlots = [];
const resizer = new ResizeObserver(() => {
  for (const { plot, el } of livePlots) {
    if (el.isConnected && el.clientWidth > 0) plot.setSize({ width: el.clientWidth, height: plot.height });
  }
});

function drawPending() {
  const drawings = pendingDrawings;
  pendingDrawings = [];
  for (const draw of drawings) draw();
}

/**
 * A time-series chart. `series` are `{label, color, values, bars?}`; `x` are
 * epoch seconds; `format` formats a y value. With `stack`, bars are drawn
 * stacked (each series on top of the ones before it) and the legend shows
 * each series' own value.
 */
function timeChart(el, { x, series, format, height = 240, stack = false, yMin }) {
  const raw = series.map((s) => s.values);
  let data = raw;
  if (stack) {
    const sums = x.map(() => 0);
    data = raw.map((values) => values.map((v, i) => (sums[i] += v ?? 0)));
  }
  const axis = {
    stroke: cssVar("--muted"),
    grid: { stroke: cssVar("--grid"), width: 1 },
    ticks: { stroke: cssVar("--grid"), width: 1 },
  };
  const seriesOpts = series.map((s, i) => ({
    label: s.label,
    stroke: cssVar(s.color),
    fill: stack ? cssVar(s.color) : undefined,
    width: stack ? 0 : 2,
    spanGaps: false,
    points: { show: x.length < 40 },
    paths: s.bars || stack ? uPlot.paths.bars({ size: [0.7, 48] }) : undefined,
    value: (u, v, sidx, didx) => {
      const own = didx === null || didx === undefined ? null : raw[i][didx];
      return own === null || own === undefined ? "–" : format(own);
    },
  }));
  // Stacked: draw the tallest (last) first, so each lower band shows on top of it.
  const order = stack ? [...series.keys()].reverse() : [...series.keys()];
  const opts = {
    width: el.clientWidth || 600,
    height,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    scales: { x: { time: true }, y: yMin === undefined ? {} : { range: (u, min, max) => [yMin, Math.max(max, yMin + 1)] } },
    axes: [axis, { ...axis, size: 84, values: (u, vals) => vals.map((v) => format(v)) }],
    series: [{ label: "UTC" }, ...order.map((i) => seriesOpts[i])],
    legend: { live: true },
    cursor: { focus: { prox: 16 } },
  };
  const plot = new uPlot(opts, [x, ...order.map((i) => data[i])], el);
  livePlots.push({ plot, el });
  resizer.observe(el);
  return plot;
}

function epoch(iso) {
  return Math.floor(new Date(iso).getTime() / 1000);
}

// ------------------------------------------------------------ auth, chrome

/** A button that drops the tab's token and draws the page again (which then asks for one). */
function forgetButton() {
  return h(
    "button",
    {
      type: "button",
      onclick: () => {
        sessionStorage.removeItem(TOKEN_KEY);
        render();
      },
    },
    "Forget token",
  );
}

function drawSession(session) {
  const box = document.getElementById("session");
  if (!session) {
    box.replaceChildren();
    return;
  }
  box.replaceChildren(
    session.auth_enforced
      ? h("span", {}, `${session.subject} · ${session.roles.join(", ")}`)
      : h("span", {}, "auth off: every caller is admin"),
  );
  if (sessionStorage.getItem(TOKEN_KEY)) box.append(forgetButton());
}

/** The token form, after a 401 (no or a refused token) or a 403 (the wrong role). */
function drawAuth(error) {
  setState("auth");
  drawSession(null);
  const had = Boolean(sessionStorage.getItem(TOKEN_KEY));
  let message;
  if (error.status === 403) {
    message = `This token is valid but does not hold the role this page needs: ${error.problem.detail || "reader"}. The dashboard needs a token with the reader role (admin for holds and deletes); a writer token can only append records.`;
  } else if (had) {
    message = `The service did not accept this token (401): ${error.problem.detail || "unknown or expired"}. Paste another one.`;
  } else {
    message = "The service needs a token to show its data (401). Paste a reader or admin token.";
  }
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  show(
    h(
      "section",
      { class: "notice", "aria-labelledby": "auth-title" },
      h("h1", { id: "auth-title" }, "A token is needed"),
      h("p", { id: "auth-message", role: "alert" }, message),
      h(
        "form",
        {
          id: "token-form",
          class: "filters",
          onsubmit: (event) => {
            event.preventDefault();
            const token = input.value.trim();
            if (!TOKEN_SHAPE.test(token)) {
              document.getElementById("auth-message").textContent =
                "That is not a token: a token is printable ASCII without spaces (check for a pasted line break or an invisible character).";
              input.focus();
              return;
            }
            sessionStorage.setItem(TOKEN_KEY, token);
            render();
          },
        },
        h("label", {}, "Bearer token", input),
        h("button", { type: "submit" }, "Use token"),
      ),
      h(
        "p",
        { class: "muted" },
        "An operator creates one with ",
        h("code", {}, "remaudit token create"),
        ". It is kept in this tab's session storage only, sent only to this service, and forgotten when the tab closes.",
      ),
    ),
  );
  input.focus();
}

function drawError(error) {
  setState("error");
  const p = error.problem || {};
  show(
    h(
      "div",
      { class: "alert", role: "alert", id: "page-error" },
      h("strong", {}, p.title || "Error"),
      `: ${p.detail || error.message}`,
      p.errors?.length ? h("ul", {}, p.errors.map((e) => h("li", {}, `${e.field}: ${e.message}`))) : null,
    ),
    h("p", {}, h("a", { href: location.pathname + location.search }, "Try again"), " · ", h("a", { href: "/" }, "Overview")),
    sessionStorage.getItem(TOKEN_KEY)
      ? h("p", {}, forgetButton())
      : null,
  );
}

// ----------------------------------------------------------------- overview

function windowSelect(current) {
  return h(
    "label",
    {},
    "Window",
    h(
      "select",
      { id: "window", name: "window", onchange: (e) => e.target.form.requestSubmit() },
      WINDOWS.map((w) => h("option", { value: w, selected: w === current }, `last ${w}`)),
    ),
  );
}

function validWindow(value, fallback) {
  return WINDOWS.includes(value) ? value : fallback;
}

/** `n` equal slices of a window, on the window's alignment. */
function slices(since, until, n) {
  const start = new Date(since).getTime();
  const end = new Date(until).getTime();
  const unit = end - start >= 48 * 3600e3 ? 86400e3 : 3600e3;
  const step = Math.max(unit, Math.round((end - start) / n / unit) * unit);
  const out = [];
  for (let t = start; t < Math.min(end, Date.now()); t += step) {
    out.push([new Date(t).toISOString(), new Date(Math.min(t + step, end)).toISOString()]);
  }
  return out;
}

async function overview(params) {
  const window = validWindow(params.get("window"), "7d");
  const namespace = params.get("namespace") || "";
  document.title = `Overview · ${window} · remaudit`;
  const scope = { window, namespace };
  const [rate, failures, retries, durations] = await Promise.all([
    api(`${ANALYTICS}/success-rate`, { ...scope, bucket: SERIES_BUCKET[window] }),
    api(`${ANALYTICS}/failures`, { ...scope, limit: 50 }),
    api(`${ANALYTICS}/retries`, { ...scope, limit: 20 }),
    api(`${ANALYTICS}/durations`, scope),
  ]);
  const aligned = rate.query.window;
  const cuts = slices(aligned.since, aligned.until, DURATION_SLICES[window]);
  const durationSeries = await Promise.all(
    cuts.map(([since, until]) => api(`${ANALYTICS}/durations`, { since, until, namespace })),
  );

  const t = rate.totals;
  const totals = [
    ["started", "Started", t.started, fmtCount],
    ["completed", "Completed", t.completed, fmtCount],
    ["failed", "Failed", t.failed, fmtCount],
    ["timed_out", "Timed out", t.timed_out, fmtCount],
    ["in_progress", "In progress", t.in_progress, fmtCount],
    ["success_rate", "Success rate", t.success_rate, fmtPercent],
  ];
  show(
    h("h1", {}, "Remediation health"),
    h(
      "form",
      { id: "filters", class: "filters", method: "get", action: "/", role: "search", "aria-label": "Window and namespace" },
      windowSelect(window),
      h("label", {}, "Namespace", h("input", { id: "namespace", name: "namespace", value: namespace, placeholder: "all namespaces", maxlength: 63 })),
      h("button", { type: "submit" }, "Show"),
    ),
    h(
      "p",
      { class: "muted" },
      `${fmtTime(aligned.since)} to ${fmtTime(aligned.until)}, ${namespace ? `namespace ${namespace}` : "all namespaces"}; windows align to ${aligned.aligned_to}s, answered from ${rate.query.source}.`,
    ),
    h(
      "div",
      { class: "totals", role: "list", "aria-label": "Totals of the window" },
      totals.map(([key, label, value, fmt]) =>
        h(
          "div",
          { class: "total", role: "listitem" },
          h("div", { class: "label", id: `total-${key}` }, label),
          h("div", { class: "value", "data-total": key, "data-value": value ?? "", "aria-labelledby": `total-${key}` }, fmt(value)),
        ),
      ),
    ),
    h(
      "div",
      { class: "grid" },
      successRateFigure(rate, window),
      outcomesFigure(rate, window),
    ),
    durationsFigure(durations, cuts, durationSeries, window),
    failuresFigure(failures, window),
    retriesSection(retries, window, namespace),
  );
}

/** The series' buckets up to now (an aligned window may end in the future). */
function seriesRows(rate) {
  const now = Date.now();
  return rate.series.filter((p) => new Date(p.since).getTime() <= now);
}

const COUNT_COLUMNS = [
  { key: "started", label: "Started", num: true },
  { key: "finished", label: "Finished", num: true },
  { key: "completed", label: "Completed", num: true },
  { key: "failed", label: "Failed", num: true },
  { key: "timed_out", label: "Timed out", num: true },
  { key: "in_progress", label: "In progress", num: true },
];

function successRateFigure(rate, window) {
  const rows = seriesRows(rate);
  const rates = rows.map((r) => r.success_rate).filter((r) => r !== null && r !== undefined);
  const summary = rates.length
    ? `${fmtPercent(rate.totals.success_rate)} over the window; per ${SERIES_BUCKET[window]} from ${fmtPercent(Math.min(...rates))} to ${fmtPercent(Math.max(...rates))}.`
    : "No finished remediations in this window.";
  return figure({
    key: "success-rate",
    title: "Success rate",
    summary,
    csvName: `success-rate-${window}.csv`,
    columns: [
      { key: "since", label: "From (UTC)", render: (r) => fmtTime(r.since) },
      ...COUNT_COLUMNS,
      { key: "success_rate", label: "Success rate", num: true, render: (r) => fmtPercent(r.success_rate) },
    ],
    rows,
    draw: (el) =>
      timeChart(el, {
        x: rows.map((r) => epoch(r.since)),
        series: [{ label: "success rate", color: "--series-2", values: rows.map((r) => (r.success_rate === null ? null : r.success_rate * 100)) }],
        format: (v) => `${Number(v).toFixed(0)} %`,
        yMin: 0,
      }),
  });
}

function outcomesFigure(rate, window) {
  const rows = seriesRows(rate);
  const t = rate.totals;
  return figure({
    key: "outcomes",
    title: "Remediations by final phase",
    summary: `${fmtCount(t.started)} started: ${fmtCount(t.completed)} completed, ${fmtCount(t.failed)} failed, ${fmtCount(t.timed_out)} timed out, ${fmtCount(t.in_progress)} still in progress.`,
    csvName: `outcomes-${window}.csv`,
    columns: [{ key: "since", label: "From (UTC)", render: (r) => fmtTime(r.since) }, ...COUNT_COLUMNS],
    rows,
    draw: (el) =>
      timeChart(el, {
        x: rows.map((r) => epoch(r.since)),
        stack: true,
        series: [
          { label: "completed", color: "--ok", values: rows.map((r) => r.completed) },
          { label: "failed", color: "--bad", values: rows.map((r) => r.failed) },
          { label: "timed out", color: "--warn", values: rows.map((r) => r.timed_out) },
          { label: "in progress", color: "--run", values: rows.map((r) => r.in_progress) },
        ],
        format: (v) => fmtCount(Math.round(v)),
        yMin: 0,
      }),
  });
}

function durationsFigure(whole, cuts, reports, window) {
  const finals = ["completed", "failed", "timeout"];
  const rows = [];
  reports.forEach((report, i) => {
    for (const p of report.phases) {
      if (p.final_phase === "all") continue;
      rows.push({ since: cuts[i][0], until: cuts[i][1], ...p });
    }
  });
  const present = finals.filter((f) => rows.some((r) => r.final_phase === f));
  const x = cuts.map(([since]) => epoch(since));
  const byPhase = (phase, key) =>
    reports.map((report) => report.phases.find((p) => p.final_phase === phase)?.[key] ?? null);
  const charts = h("div", { class: "grid" });
  const draws = [];
  for (const phase of present) {
    const el = h("div", { class: "plot", role: "img", "aria-label": `Duration percentiles of ${phase} remediations per slice of the window; the table lists every value.` });
    charts.append(h("div", {}, h("h3", { class: phaseClass(phase) }, phase), el));
    draws.push(() =>
      timeChart(el, {
        x,
        height: 200,
        series: [
          { label: "p50", color: "--series-1", values: byPhase(phase, "p50_seconds") },
          { label: "p95", color: "--series-4", values: byPhase(phase, "p95_seconds") },
          { label: "p99", color: "--series-3", values: byPhase(phase, "p99_seconds") },
        ],
        format: fmtDuration,
        yMin: 0,
      }),
    );
  }
  const all = whole.phases.map((p) => `${p.final_phase} p50 ${fmtDuration(p.p50_seconds)}, p95 ${fmtDuration(p.p95_seconds)}, p99 ${fmtDuration(p.p99_seconds)} (${fmtCount(p.count)})`);
  const fig = figure({
    key: "durations",
    title: "Duration by final phase: p50, p95, p99",
    summary: all.length
      ? `Over the whole window: ${all.join("; ")}. Percentiles within ${(whole.relative_error * 100).toFixed(1)} %.`
      : "No finished remediations in this window.",
    csvName: `durations-${window}.csv`,
    columns: [
      { key: "since", label: "From (UTC)", render: (r) => fmtTime(r.since) },
      { key: "until", label: "Until (UTC)", render: (r) => fmtTime(r.until) },
      { key: "final_phase", label: "Final phase", render: (r) => h("span", { class: phaseClass(r.final_phase) }, r.final_phase) },
      { key: "count", label: "Count", num: true },
      { key: "p50_seconds", label: "p50", num: true, render: (r) => fmtDuration(r.p50_seconds) },
      { key: "p95_seconds", label: "p95", num: true, render: (r) => fmtDuration(r.p95_seconds) },
      { key: "p99_seconds", label: "p99", num: true, render: (r) => fmtDuration(r.p99_seconds) },
    ],
    rows,
    body: present.length ? charts : h("p", { class: "muted" }, "No finished remediations in this window."),
  });
  pendingDrawings.push(...draws);
  return fig;
}

function failuresFigure(report, window) {
  const rows = report.items.map((g) => ({ ...g, phase: g.phase ?? "unknown" }));
  const max = Math.max(1, ...rows.map((r) => r.count));
  const bars = h(
    "div",
    { class: "bars" },
    rows.map((r) => {
      const bar = h("div", { class: `bar ${r.outcome === "timeout" ? "timeout" : ""}` });
      bar.style.width = `${(100 * r.count) / max}%`;
      return h(
        "div",
        {},
        h(
          "div",
          { class: "bar-row" },
          h("span", {}, h("span", { class: phaseClass(r.outcome) }, r.outcome), ` in ${r.phase}`),
          h("div", { "aria-hidden": "true" }, bar),
          h("span", { class: "num" }, fmtCount(r.count)),
        ),
        r.sample_reasons.length ? h("ul", { class: "reasons" }, r.sample_reasons.map((s) => h("li", {}, s))) : null,
      );
    }),
  );
  const total = rows.reduce((n, r) => n + r.count, 0);
  return figure({
    key: "failures",
    title: "Failures and timeouts by phase",
    summary: rows.length
      ? `${fmtCount(total)} remediations failed or timed out, most in ${rows[0].phase} (${rows[0].outcome}, ${fmtCount(rows[0].count)}).`
      : "No failures or timeouts in this window.",
    csvName: `failures-${window}.csv`,
    columns: [
      { key: "outcome", label: "Outcome", render: (r) => h("span", { class: phaseClass(r.outcome) }, r.outcome) },
      { key: "phase", label: "Phase" },
      { key: "count", label: "Count", num: true },
      { key: "unique_alerts", label: "Alerts", num: true },
      { key: "sample_reasons", label: "Sample reasons", render: (r) => r.sample_reasons.join(" · ") || "–", csv: (r) => r.sample_reasons.join(" | ") },
    ],
    rows,
    rowAttrs: (r) => ({ "data-outcome": r.outcome, "data-phase": r.phase }),
    body: rows.length ? bars : null,
  });
}

/** The post-mortem of an alert, over `window` (90 days by default) and in one namespace or all. */
function postmortemHref(fingerprint, window = "90d", namespace = "") {
  return `/postmortem${query({ fingerprint, window, namespace })}`;
}

function retriesSection(report, window, namespace) {
  const columns = [
    {
      key: "alert_fingerprint",
      label: "Alert",
      render: (r) => h("a", { class: "postmortem-link mono", href: postmortemHref(r.alert_fingerprint, window, namespace) }, r.alert_fingerprint),
    },
    { key: "attempts", label: "Attempts", num: true },
    { key: "completed", label: "Completed", num: true },
    { key: "failed", label: "Failed", num: true },
    { key: "timed_out", label: "Timed out", num: true },
    { key: "in_progress", label: "In progress", num: true },
    { key: "eventually_successful", label: "Resolved", render: (r) => (r.eventually_successful ? "yes" : "no") },
    { key: "last_attempt", label: "Last attempt", render: (r) => fmtTime(r.last_attempt) },
  ];
  return h(
    "section",
    { id: "retries", class: "panel", "aria-labelledby": "retries-title" },
    h(
      "div",
      { class: "filters" },
      h("h2", { id: "retries-title" }, "Alerts with the most retries"),
      h("a", { "data-action": "csv", href: csvHref(columns, report.items), download: `retries-${window}.csv` }, "CSV"),
    ),
    h(
      "p",
      { class: "muted" },
      `${fmtCount(report.alerts_retried)} of ${fmtCount(report.alerts)} alerts were remediated more than once (${fmtCount(report.attempts)} attempts in all).`,
    ),
    table(columns, report.items, { caption: "Alerts remediated more than once, most attempts first", rowAttrs: (r) => ({ "data-fingerprint": r.alert_fingerprint }) }),
  );
}

// --------------------------------------------------------------- post-mortem

function steps(timeline) {
  let previous = null;
  return h(
    "ol",
    { class: "steps" },
    timeline.map((e) => {
      const gap = previous ? ` (+${fmtDuration(secondsBetween(previous, e.event_time))})` : "";
      previous = e.event_time;
      return h("li", {}, h("span", { class: phaseClass(e.overall_phase) }, e.overall_phase), gap);
    }),
  );
}

async function timelineOf(id) {
  const events = [];
  let cursor = null;
  let remediation = null;
  // A remediation has a handful of transitions; ten pages of 1000 bound a runaway one.
  for (let page = 0; page < 10; page += 1) {
    const answer = await api(`${AUDIT}/${encodeURIComponent(id)}`, { limit: 1000, cursor });
    remediation = answer.remediation;
    events.push(...answer.timeline);
    cursor = answer.next_cursor;
    if (!cursor) break;
  }
  return { remediation, timeline: events, truncated: Boolean(cursor) };
}

async function postmortem(params) {
  const fingerprint = (params.get("fingerprint") || "").trim();
  const window = validWindow(params.get("window"), "90d");
  const namespace = (params.get("namespace") || "").trim();
  const limit = Math.min(1000, Math.max(1, Number.parseInt(params.get("limit") || "100", 10) || 100));
  document.title = `Post-mortem ${fingerprint.slice(0, 12)} · remaudit`;
  const form = h(
    "form",
    { id: "filters", class: "filters", method: "get", action: "/postmortem", role: "search", "aria-label": "Alert and window" },
    h("label", {}, "Alert fingerprint", h("input", { id: "fingerprint", name: "fingerprint", value: fingerprint, required: true, maxlength: 64, size: 40 })),
    windowSelect(window),
    h("label", {}, "Namespace", h("input", { id: "namespace", name: "namespace", value: namespace, placeholder: "all namespaces", maxlength: 63 })),
    h("button", { type: "submit" }, "Show"),
  );
  if (!fingerprint) {
    show(h("h1", {}, "Post-mortem"), form, h("p", { class: "notice" }, "Give an alert's fingerprint, or follow an alert from the overview."));
    return;
  }
  const report = await api(`${ANALYTICS}/postmortem`, { alert_fingerprint: fingerprint, window, namespace, limit });
  const items = report.items;
  const counts = {};
  for (const r of items) counts[r.overall_phase] = (counts[r.overall_phase] || 0) + 1;
  const columns = [
    { key: "start_time", label: "Started (UTC)", render: (r) => fmtTime(r.start_time) },
    { key: "remediation_name", label: "Remediation", render: (r) => h("a", { class: "remediation-link", href: `/remediation?id=${r.id}` }, r.remediation_name) },
    { key: "namespace", label: "Namespace" },
    { key: "overall_phase", label: "Outcome", render: (r) => h("span", { class: phaseClass(r.overall_phase) }, r.overall_phase) },
    { key: "duration_seconds", label: "Duration", num: true, render: (r) => fmtDuration(r.duration_seconds) },
    { key: "failure_phase", label: "Failed in" },
    { key: "failure_reason", label: "Reason" },
    { key: "timeout_phase", label: "Timed out in" },
    {
      key: "timeline",
      label: "Timeline",
      csv: (r) => r.timeline,
      render: (r) => {
        const details = h("details", { "data-timeline": r.id }, h("summary", {}, "transitions"), h("p", { class: "muted" }, "Loading…"));
        details.addEventListener("toggle", () => {
          if (details.open) loadSteps(details, r.id);
        });
        return details;
      },
    },
  ];
  show(
    h("h1", {}, "Post-mortem of one alert"),
    form,
    h(
      "p",
      { class: "muted" },
      h("span", { class: "mono" }, fingerprint),
      `: ${items.length} remediation${items.length === 1 ? "" : "s"} in the last ${window}${namespace ? ` in namespace ${namespace}` : ""}, newest first`,
      items.length ? ` (${Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ")})` : "",
      items.length === limit ? `; the list stops at ${limit}: ` : ".",
      items.length === limit && limit < 1000 ? h("a", { href: `/postmortem${query({ fingerprint, window, namespace, limit: 1000 })}` }, "show up to 1000") : null,
    ),
    h(
      "section",
      { class: "panel", "aria-label": "Remediations of this alert" },
      h("div", { class: "filters" }, h("a", { "data-action": "csv", href: csvHref(columns, items), download: `postmortem-${fingerprint.slice(0, 16)}.csv` }, "CSV")),
      table(columns, items, { id: "postmortem", caption: "Remediations of this alert, newest first", rowAttrs: (r) => ({ "data-remediation-id": r.id }) }),
    ),
  );
  // The newest three open at once, drawn before the page says it is ready:
  // they are what a post-mortem reads first. The others load when unfolded.
  const first = [...main.querySelectorAll("details[data-timeline]")].slice(0, 3);
  await Promise.all(
    first.map((d) => {
      const loading = loadSteps(d, d.dataset.timeline);
      d.open = true;
      return loading;
    }),
  );
}

/** Draws a remediation's transitions into its `<details>`, once. */
function loadSteps(details, id) {
  if (details.dataset.loaded) return Promise.resolve();
  details.dataset.loaded = "1";
  return timelineOf(id)
    .then(({ timeline }) => details.replaceChildren(details.firstChild, steps(timeline)))
    .catch((e) => details.replaceChildren(details.firstChild, h("p", { class: "alert", role: "alert" }, e.message)));
}

// --------------------------------------------------------------- remediation

function gantt(remediation, timeline) {
  // Consecutive transitions to the same phase (replays, updates) are one stretch.
  const events = [...timeline]
    .sort((a, b) => new Date(a.event_time) - new Date(b.event_time))
    .filter((e, i, all) => i === 0 || all[i - 1].overall_phase !== e.overall_phase);
  if (events.length === 0) return h("p", { class: "muted" }, "No transitions recorded.");
  const terminal = (p) => ["completed", "failed", "timeout"].includes(p);
  const begin = Math.min(new Date(events[0].event_time).getTime(), new Date(remediation.start_time).getTime());
  const lastEvent = events[events.length - 1];
  const running = !terminal(lastEvent.overall_phase);
  const end = Math.max(
    running ? Date.now() : new Date(lastEvent.event_time).getTime(),
    remediation.completion_time ? new Date(remediation.completion_time).getTime() : 0,
    begin + 1000,
  );
  const span = end - begin;
  const lanes = events.map((e, i) => {
    const from = new Date(e.event_time).getTime();
    const to = i + 1 < events.length ? new Date(events[i + 1].event_time).getTime() : terminal(e.overall_phase) ? from : end;
    const bar = h("div", { class: `span ${phaseClass(e.overall_phase)}` });
    bar.style.left = `${(100 * (from - begin)) / span}%`;
    bar.style.width = `${(100 * (to - from)) / span}%`;
    const label = terminal(e.overall_phase)
      ? `${e.overall_phase} at ${fmtTime(e.event_time)}`
      : `${e.overall_phase} for ${fmtDuration((to - from) / 1000)}${i + 1 === events.length ? " so far" : ""}`;
    bar.title = label;
    return h(
      "div",
      { class: "lane", "data-phase": e.overall_phase },
      h("span", { class: phaseClass(e.overall_phase) }, e.overall_phase),
      h("div", { class: "track", role: "img", "aria-label": label }, bar),
    );
  });
  return h(
    "div",
    { id: "gantt", class: "gantt" },
    lanes,
    h("div", { class: "axis", "aria-hidden": "true" }, h("span", {}, fmtTime(new Date(begin).toISOString())), h("span", {}, fmtDuration(span / 1000)), h("span", {}, fmtTime(new Date(end).toISOString()))),
  );
}

function crdTable(statuses, remediation) {
  // Snapshots are written by the orchestrator, in camelCase; snake_case is read too.
  const names = {
    remediationProcessing: remediation.remediation_processing_name,
    aiAnalysis: remediation.ai_analysis_name,
    workflowExecution: remediation.workflow_execution_name,
  };
  const camel = (k) => k.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
  const rows = Object.entries(statuses || {}).map(([key, s]) => {
    const child = camel(key);
    const snap = s && typeof s === "object" ? Object.fromEntries(Object.entries(s).map(([k, v]) => [camel(k), v])) : { phase: String(s) };
    const { phase, startTime, completionTime, ...rest } = snap;
    return {
      child,
      name: Object.hasOwn(names, child) ? names[child] || "–" : "–",
      phase,
      start_time: startTime,
      completion_time: completionTime,
      more: Object.keys(rest).length ? JSON.stringify(rest) : "",
    };
  });
  return table(
    [
      { key: "child", label: "Child" },
      { key: "name", label: "Resource", render: (r) => h("span", { class: "mono" }, r.name) },
      { key: "phase", label: "Phase", render: (r) => h("span", { class: phaseClass(r.phase) }, r.phase ?? "–") },
      { key: "start_time", label: "Started", render: (r) => fmtTime(r.start_time) },
      { key: "completion_time", label: "Finished", render: (r) => fmtTime(r.completion_time) },
      { key: "more", label: "More", render: (r) => h("span", { class: "mono" }, r.more || "–") },
    ],
    rows,
    { id: "crd-statuses", caption: "Status snapshots of the child resources" },
  );
}

function field(key, label, value) {
  return [h("dt", {}, label), h("dd", { "data-field": key }, value ?? "–")];
}

let flash = null;

async function remediationPage(params, session) {
  const id = (params.get("id") || "").trim();
  if (!/^-?\d{1,19}$/.test(id)) {
    document.title = "Remediation · remaudit";
    show(h("h1", {}, "Remediation"), h("p", { class: "alert", role: "alert" }, `"${id}" is not a remediation id: ids are whole numbers, as the search and post-mortem pages link them.`));
    return;
  }
  const message = flash;
  flash = null;
  let loaded;
  try {
    loaded = await timelineOf(id);
  } catch (e) {
    if (e.status === 404) {
      document.title = `Remediation ${id} · remaudit`;
      show(
        h("h1", {}, `Remediation ${id}`),
        message ? h("p", { id: "admin-result", class: "notice", role: "status" }, message) : null,
        h("p", { class: "notice" }, `No remediation ${id}: it never existed, was deleted, or has been archived. `, h("a", { href: "/search" }, "Search")),
      );
      return;
    }
    throw e;
  }
  const { remediation: r, timeline, truncated } = loaded;
  document.title = `${r.remediation_name} · remaudit`;
  const isAdmin = session.roles.includes("admin");
  const transitions = [...timeline].sort((a, b) => new Date(a.event_time) - new Date(b.event_time));
  show(
    h("h1", {}, "Remediation ", h("span", { class: "mono" }, r.remediation_name)),
    h(
      "section",
      { class: "panel", "aria-labelledby": "summary-title" },
      h("h2", { id: "summary-title" }, "Summary"),
      h(
        "dl",
        { class: "fields" },
        field("overall_phase", "Outcome", h("span", { class: phaseClass(r.overall_phase) }, r.overall_phase)),
        field("namespace", "Namespace", r.namespace),
        field("alert_fingerprint", "Alert", h("a", { href: postmortemHref(r.alert_fingerprint), class: "mono" }, r.alert_fingerprint)),
        field("start_time", "Started", fmtTime(r.start_time)),
        field("completion_time", "Finished", fmtTime(r.completion_time)),
        field("duration", "Duration", r.completion_time ? fmtDuration(secondsBetween(r.start_time, r.completion_time)) : "still running"),
        field("failure_phase", "Failed in", r.failure_phase),
        field("failure_reason", "Failure reason", r.failure_reason),
        field("timeout_phase", "Timed out in", r.timeout_phase),
        field("timeout_time", "Timed out at", r.timeout_time ? fmtTime(r.timeout_time) : null),
        field("duplicate_count", "Duplicate alerts", String(r.duplicate_count)),
        field("last_duplicate_time", "Last duplicate", r.last_duplicate_time ? fmtTime(r.last_duplicate_time) : null),
        field("legal_hold", "Legal hold", r.legal_hold ? "yes" : "no"),
        field("retention_expiry_time", "Archived after", r.retention_expiry_time ? fmtTime(r.retention_expiry_time) : null),
        field("id", "Id", String(r.id)),
      ),
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "timeline-title" },
      h("h2", { id: "timeline-title" }, "Timeline"),
      gantt(r, transitions),
      truncated ? h("p", { class: "alert" }, "Only the first 10,000 transitions are shown.") : null,
      table(
        [
          { key: "overall_phase", label: "Phase", render: (e) => h("span", { class: phaseClass(e.overall_phase) }, e.overall_phase) },
          { key: "event_time", label: "At (UTC)", render: (e) => fmtTime(e.event_time) },
          { key: "in_phase", label: "Time in phase", num: true, render: (e) => fmtDuration(e.in_phase) },
          { key: "received_at", label: "Received", render: (e) => fmtTime(e.received_at) },
          { key: "event_id", label: "Event", render: (e) => h("span", { class: "mono" }, e.event_id) },
        ],
        transitions.map((e, i) => ({
          ...e,
          in_phase: i + 1 < transitions.length ? secondsBetween(e.event_time, transitions[i + 1].event_time) : null,
        })),
        { id: "transitions", caption: "Transitions in the order they happened" },
      ),
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "crd-title" },
      h("h2", { id: "crd-title" }, "Child resources"),
      r.service_crd_statuses ? crdTable(r.service_crd_statuses, r) : h("p", { class: "muted" }, "No status snapshot was recorded."),
    ),
    isAdmin ? adminActions(r, message) : null,
  );
}

/** Hold, release and delete, with the reason each needs; `message` tells how the last one went. */
function adminActions(r, message) {
  const reason = h("input", { id: "admin-reason", name: "reason", required: true, maxlength: 1024, size: 40, autocomplete: "off" });
  const result = h("p", { id: "admin-result", role: "status", class: message ? "notice" : "muted" }, message);
  const act = async (action) => {
    const why = reason.value.trim();
    if (!why) {
      result.className = "alert";
      result.textContent = "Give a reason: it is kept in the admin log.";
      reason.focus();
      return;
    }
    if (action === "delete" && !window.confirm(`Delete remediation ${r.remediation_name}? It disappears from reads and is archived by the next retention run.`)) return;
    const path = action === "delete" ? `${AUDIT}/${r.id}` : `${AUDIT}/${r.id}/legal-hold`;
    const method = action === "hold" ? "PUT" : "DELETE";
    const buttons = [...section.querySelectorAll("button")];
    const enabled = buttons.map((b) => b.disabled);
    for (const b of buttons) b.disabled = true;
    try {
      await api(path, {}, { method, body: { reason: why } });
      flash = { hold: "Legal hold set.", release: "Legal hold released.", delete: "Remediation deleted." }[action];
      await render();
    } catch (e) {
      buttons.forEach((b, i) => (b.disabled = enabled[i]));
      result.className = "alert";
      result.textContent = `${e.problem?.title || "Error"}: ${e.message}`;
    }
  };
  const section = h(
    "section",
    { id: "admin-actions", class: "panel", "aria-labelledby": "admin-title" },
    h("h2", { id: "admin-title" }, "Admin actions"),
    h("p", { class: "muted" }, "Each action is written to the admin log with your subject and the reason."),
    h(
      "form",
      { class: "filters", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Reason", reason),
      h("button", { type: "button", "data-action": "hold", disabled: r.legal_hold, onclick: () => act("hold") }, "Put on legal hold"),
      h("button", { type: "button", "data-action": "release", disabled: !r.legal_hold, onclick: () => act("release") }, "Release hold"),
      h("button", { type: "button", class: "danger", "data-action": "delete", disabled: r.legal_hold, onclick: () => act("delete") }, "Delete…"),
    ),
    result,
  );
  return section;
}

// -------------------------------------------------------------------- search

const SEARCH_FIELDS = [
  ["fingerprint", "alert_fingerprint", "Alert fingerprint"],
  ["name", "remediation_name", "Remediation name"],
  ["namespace", "namespace", "Namespace"],
  ["phase", "overall_phase", "Phase"],
  ["since", "since", "Started from (RFC 3339)"],
  ["until", "until", "Started before (RFC 3339)"],
];

async function search(params) {
  document.title = "Search · remaudit";
  const values = Object.fromEntries(SEARCH_FIELDS.map(([name]) => [name, (params.get(name) || "").trim()]));
  const cursor = params.get("cursor") || "";
  const inputs = SEARCH_FIELDS.map(([name, , label]) =>
    name === "phase"
      ? h("label", {}, label, h("select", { id: "s-phase", name: "phase" }, h("option", { value: "" }, "any"), PHASES.map((p) => h("option", { value: p, selected: p === values.phase }, p))))
      : h("label", {}, label, h("input", { id: `s-${name}`, name, value: values[name], placeholder: name === "since" || name === "until" ? "2026-12-01T00:00:00Z" : "", autocomplete: "off" })),
  );
  const errorBox = h("div", { id: "search-error", role: "alert" });
  const form = h("form", { id: "search-form", class: "search", method: "get", action: "/search", role: "search" }, inputs, h("button", { type: "submit" }, "Search"));
  show(h("h1", {}, "Search remediations"), form, errorBox);
  const apiParams = { limit: 50, cursor };
  for (const [name, apiName] of SEARCH_FIELDS) apiParams[apiName] = values[name];
  let page;
  try {
    page = await api(AUDIT, apiParams);
  } catch (e) {
    if (e.status !== 400) throw e;
    errorBox.className = "alert";
    append(errorBox, [
      h("strong", {}, "The search was not run: "),
      e.problem.detail || e.message,
      e.problem.errors?.length
        ? h("ul", {}, e.problem.errors.map((f) => h("li", {}, `${SEARCH_FIELDS.find(([, api]) => api === f.field)?.[2] ?? f.field}: ${f.message}`)))
        : null,
    ]);
    return;
  }
  const columns = [
    { key: "id", label: "Id", num: true, render: (r) => h("a", { class: "remediation-link", href: `/remediation?id=${r.id}` }, String(r.id)) },
    { key: "start_time", label: "Started (UTC)", render: (r) => fmtTime(r.start_time) },
    { key: "remediation_name", label: "Remediation", render: (r) => h("span", { class: "mono" }, r.remediation_name) },
    { key: "namespace", label: "Namespace" },
    { key: "alert_fingerprint", label: "Alert", render: (r) => h("a", { class: "mono", href: postmortemHref(r.alert_fingerprint) }, r.alert_fingerprint.slice(0, 16)) },
    { key: "overall_phase", label: "Phase", render: (r) => h("span", { class: phaseClass(r.overall_phase) }, r.overall_phase) },
    { key: "duration", label: "Duration", num: true, render: (r) => (r.completion_time ? fmtDuration(secondsBetween(r.start_time, r.completion_time)) : "–"), csv: (r) => (r.completion_time ? secondsBetween(r.start_time, r.completion_time) : "") },
    { key: "duplicate_count", label: "Duplicates", num: true },
  ];
  const here = Object.fromEntries(SEARCH_FIELDS.map(([name]) => [name, values[name]]));
  append(main, [
    h(
      "section",
      { class: "panel", "aria-label": "Results" },
      h("div", { class: "filters" }, h("span", { class: "muted" }, `${page.items.length} shown, newest first${cursor ? ", continued" : ""}`), h("a", { "data-action": "csv", href: csvHref(columns, page.items), download: "search.csv" }, "CSV")),
      table(columns, page.items, { id: "results", caption: "Remediations found, newest first", rowAttrs: (r) => ({ "data-remediation-id": r.id }) }),
      h(
        "div",
        { class: "pager" },
        cursor ? h("a", { id: "first-page", href: `/search${query(here)}` }, "First page") : null,
        page.next_cursor ? h("a", { id: "next-page", href: `/search${query({ ...here, cursor: page.next_cursor })}` }, "Next page") : null,
      ),
    ),
  ]);
}

// -------------------------------------------------------------------- router

const PAGES = {
  "/": overview,
  "/postmortem": postmortem,
  "/remediation": remediationPage,
  "/search": search,
};

async function render() {
  setState("loading");
  pendingDrawings = [];
  for (const { plot } of livePlots.splice(0)) plot.destroy();
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === location.pathname) a.setAttribute("aria-current", "page");
  }
  const stored = sessionStorage.getItem(TOKEN_KEY);
  if (stored !== null && !TOKEN_SHAPE.test(stored)) sessionStorage.removeItem(TOKEN_KEY);
  try {
    const session = await api(`${API}/whoami`);
    drawSession(session);
    const page = PAGES[location.pathname];
    if (!page) {
      show(h("p", { class: "alert", role: "alert" }, `No page ${location.pathname}.`));
      setState("error");
      return;
    }
    await page(new URLSearchParams(location.search), session);
    drawPending();
    setState("ready");
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      drawAuth(error);
    } else {
      drawError(error);
    }
  }
}

render();
