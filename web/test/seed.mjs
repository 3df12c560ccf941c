// Seeds `remaudit serve` with a small, realistic fleet through its public
// batch API (POST /api/v1/audit/remediation-orchestration/batch, writer
// role), as the orchestrator would send it: one record per phase transition.
//
// The fleet: 4 namespaces, 10 alerts, 60 remediations (48 in the last 5 days,
// 12 between 10 and 25 days ago), each with its transitions
//   pending -> processing -> analyzing -> executing -> completed | failed | timeout
// and a `service_crd_statuses` snapshot of the children on every record;
// failures carry failure_phase and failure_reason, timeouts timeout_phase
// and timeout_time, some remediations count duplicate alerts, three are still
// running, and a few records are sent twice (the replay must come back as
// `duplicate`). Alerts are retried from 2 to 12 times, so the retries list and
// the post-mortems have something to show.
//
// Deterministic: a seeded PRNG decides everything; only the times move with
// the clock (every time is relative to `now`, rounded down to the minute).
// No remediation starts between 20 and 28 hours ago, nor between 5 and 10
// days ago, so that the 24h and 7d windows hold the same remediations for the
// whole test run even if it crosses an hour or a day (the service aligns
// windows to hours, or days from 48 h on).
//
// As a program: node test/seed.mjs, with REMAUDIT_WEB_BASE_URL and
// REMAUDIT_WEB_WRITER_TOKEN; prints a JSON summary. (`node --test test/`
// runs every file here as a test file: under the test runner this one
// does nothing.)

import { createHash } from 'node:crypto';

export const BATCH_PATH = '/api/v1/audit/remediation-orchestration/batch';

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ALERTS = [
  // name, namespace, attempts, chance that an attempt completes
  ['KubePodCrashLooping', 'payments', 12, 0.3],
  ['KubeMemoryOvercommit', 'checkout', 9, 0.45],
  ['KubePersistentVolumeFillingUp', 'platform', 8, 0.55],
  ['KubeDeploymentReplicasMismatch', 'checkout', 7, 0.7],
  ['NodeNotReady', 'platform', 6, 0.5],
  ['HTTPErrorRateHigh', 'payments', 5, 0.8],
  ['CertificateExpiringSoon', 'platform', 4, 0.9],
  ['KafkaConsumerLagHigh', 'search', 4, 0.6],
  ['ElasticsearchHeapHigh', 'search', 3, 0.7],
  ['CronJobFailed', 'payments', 2, 1.0],
];

/** Alerts whose latest attempt is still running, and the phase it is in. */
const RUNNING = new Map([
  ['KubePodCrashLooping', 'executing'],
  ['KubeDeploymentReplicasMismatch', 'analyzing'],
  ['KafkaConsumerLagHigh', 'processing'],
]);

const REASONS = {
  processing: [
    'signal enrichment failed: context API returned 503 Service Unavailable',
    'target resource not found: deployment/payments-api',
    'RBAC: serviceaccount remediation-processor cannot get pods in this namespace',
  ],
  analyzing: [
    'LLM provider rate limit exceeded (429); retry budget exhausted',
    'AI analysis confidence 0.41 below threshold 0.70; human review required',
    'no remediation workflow matches the root cause "node disk pressure" in the catalog',
  ],
  executing: [
    'rollout restart did not converge: 2 of 6 pods in CrashLoopBackOff after 300s',
    'kubernetes job exited with code 137 (OOMKilled)',
    'node drain blocked by PodDisruptionBudget payments-pdb (0 disruptions allowed)',
    'validation after execution failed: alert still firing 10 minutes after the action completed',
    // Hostile text: shown as text, never markup or a formula, and never
    // pushing a page sideways (the layout checks at 390 px see it).
    `<img src=x onerror="document.body.dataset.pwned=1"> =HYPERLINK("http://x") ${'x'.repeat(600)}`,
  ],
};

const PHASES = ['pending', 'processing', 'analyzing', 'executing'];
const CHILD = { processing: 'remediationProcessing', analyzing: 'aiAnalysis', executing: 'workflowExecution' };
/** How long a phase may run before the orchestrator times it out, in seconds. */
const PHASE_TIMEOUT = { processing: 600, analyzing: 1800, executing: 3600 };

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

export function fingerprint(alert, namespace) {
  return createHash('sha256').update(`${namespace}/${alert}`).digest('hex').slice(0, 16);
}

const iso = (ms) => new Date(ms).toISOString();

/**
 * The fleet for a clock: `{ remediations, records, replays }`, where each
 * remediation is described (name, namespace, fingerprint, outcome, ...) and
 * `records` are its transitions, every remediation's in order; `replays` are
 * records sent a second time.
 */
export function fleet(nowMs = Date.now(), seed = 15) {
  const rand = prng(seed);
  const pick = (items) => items[Math.floor(rand() * items.length)];
  const between = (lo, hi) => lo + rand() * (hi - lo);
  const now = Math.floor(nowMs / MINUTE) * MINUTE;

  // A start time in the recent past, away from the 24h and 7d window edges.
  const recentStart = () => {
    const hoursAgo = rand() < 0.3 ? between(2, 19) : between(29, 118);
    return now - Math.round(hoursAgo * HOUR / 1000) * 1000;
  };
  // Older attempts: the first of a much-retried alert falls between 30 and
  // 90 days back, so that each of the four windows holds different data.
  const oldStart = (i) => now - Math.round((i === 0 ? between(35, 80) : between(10, 25)) * DAY / 1000) * 1000;

  const remediations = [];
  const records = [];
  for (const [alert, namespace, attempts, completes] of ALERTS) {
    const fp = fingerprint(alert, namespace);
    const old = attempts >= 6 ? 2 : attempts >= 4 ? 1 : 0;
    const starts = [];
    for (let i = 0; i < attempts; i += 1) starts.push(i < old ? oldStart(i) : recentStart());
    starts.sort((a, b) => a - b);
    const running = RUNNING.get(alert);
    if (running) starts[starts.length - 1] = now - Math.round(between(12, 50)) * MINUTE;

    starts.forEach((start, attempt) => {
      const name = `rr-${alert.toLowerCase().replace(/[^a-z0-9]+/g, '-')}-${fp.slice(0, 5)}-${attempt + 1}`;
      let outcome;
      let stopAt; // the last in-progress phase entered
      const lastFinished = running ? attempts - 2 : attempts - 1;
      if (running && attempt === attempts - 1) {
        outcome = 'running';
        stopAt = running;
      } else if (attempt === lastFinished && alert !== ALERTS[0][0] && rand() < 0.8) {
        // Most alerts end with a successful attempt (eventually_successful);
        // the flakiest never does.
        outcome = 'completed';
        stopAt = 'executing';
      } else {
        const u = rand();
        if (u < completes) {
          outcome = 'completed';
          stopAt = 'executing';
        } else if (u < completes + (1 - completes) * 0.7) {
          outcome = 'failed';
          const v = rand();
          stopAt = v < 0.2 ? 'processing' : v < 0.5 ? 'analyzing' : 'executing';
        } else {
          outcome = 'timeout';
          stopAt = rand() < 0.4 ? 'analyzing' : 'executing';
        }
      }
      const duplicates = rand() < 0.25 ? 1 + Math.floor(rand() * 6) : 0;
      const r = { name, namespace, fingerprint: fp, alert, start, outcome, stopAt, duplicates };

      // When each phase was entered.
      const entered = { pending: start };
      let t = start + Math.round(between(2, 10)) * 1000;
      entered.processing = t;
      if (PHASES.indexOf(stopAt) >= 2) {
        t += Math.round(between(15, 90)) * 1000;
        entered.analyzing = t;
      }
      if (PHASES.indexOf(stopAt) >= 3) {
        t += Math.round(between(30, 240)) * 1000;
        entered.executing = t;
      }
      let end = null;
      if (outcome === 'completed') end = t + Math.round(between(45, 900)) * 1000;
      if (outcome === 'failed') end = t + Math.round(between(5, 400)) * 1000;
      if (outcome === 'timeout') end = entered[stopAt] + PHASE_TIMEOUT[stopAt] * 1000;
      if (outcome === 'running') {
        // Keep every time of a running remediation in the past.
        for (const p of PHASES) if (entered[p] && entered[p] > now - MINUTE) entered[p] = now - MINUTE;
      }
      r.end = end;
      if (outcome === 'failed') {
        r.failurePhase = stopAt;
        r.failureReason = pick(REASONS[stopAt]);
      }
      if (outcome === 'timeout') r.timeoutPhase = stopAt;
      remediations.push(r);

      // The children's snapshot at time `at`, as the orchestrator sees them.
      const statuses = (at, terminal) => {
        const out = {};
        for (const phase of ['processing', 'analyzing', 'executing']) {
          const began = entered[phase];
          if (began === undefined || began > at) continue;
          const next = PHASES[PHASES.indexOf(phase) + 1];
          const finishedAt = entered[next] !== undefined && entered[next] <= at ? entered[next] : null;
          const snap = { phase: 'running', startTime: iso(began), success: false };
          if (finishedAt !== null) {
            Object.assign(snap, { phase: 'completed', completionTime: iso(finishedAt), success: true });
          } else if (terminal === 'completed') {
            Object.assign(snap, { phase: 'completed', completionTime: iso(at), success: true });
          } else if (terminal === 'failed') {
            Object.assign(snap, { phase: 'failed', completionTime: iso(at), error: r.failureReason });
          } else if (terminal === 'timeout') {
            Object.assign(snap, { error: `did not finish within ${PHASE_TIMEOUT[phase] / 60} minutes` });
          }
          out[CHILD[phase]] = snap;
        }
        return out;
      };

      const base = {
        alert_fingerprint: fp,
        remediation_name: name,
        namespace,
        start_time: iso(start),
      };
      const children = (at) => {
        const c = {};
        if (entered.processing <= at) c.remediation_processing_name = `${name}-rp`;
        if (entered.analyzing !== undefined && entered.analyzing <= at) c.ai_analysis_name = `${name}-ai`;
        if (entered.executing !== undefined && entered.executing <= at) {
          c.workflow_execution_name = `${name}-we`;
          c.kubernetes_execution_name = `${name}-job`;
        }
        return c;
      };
      // Duplicate alerts joined while the remediation ran: counted from the
      // processing record on, the last one a few seconds after the start.
      const dupFields = (at) =>
        duplicates > 0 && at >= entered.processing
          ? { duplicate_count: duplicates, last_duplicate_time: iso(Math.min(at, start + duplicates * 7000)) }
          : { duplicate_count: 0 };

      for (const phase of PHASES) {
        const at = entered[phase];
        if (at === undefined) break;
        records.push({
          ...base,
          ...children(at),
          overall_phase: phase,
          event_time: iso(at),
          service_crd_statuses: statuses(at, null),
          ...dupFields(at),
        });
        if (phase === stopAt) break;
      }
      if (end !== null) {
        const rec = {
          ...base,
          ...children(end),
          overall_phase: outcome,
          event_time: iso(end),
          completion_time: iso(end),
          service_crd_statuses: statuses(end, outcome),
          ...dupFields(end),
        };
        if (outcome === 'failed') Object.assign(rec, { failure_phase: r.failurePhase, failure_reason: r.failureReason });
        if (outcome === 'timeout') Object.assign(rec, { timeout_phase: r.timeoutPhase, timeout_time: iso(end) });
        records.push(rec);
      }
    });
  }
  // Replays: every seventh record again, as a spool replay sends it.
  const replays = records.filter((_, i) => i % 7 === 3);
  return { now, remediations, records, replays };
}

async function postBatch(baseUrl, token, batch) {
  const res = await fetch(new URL(BATCH_PATH, baseUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(batch),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST ${BATCH_PATH}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/**
 * Sends the fleet in batches of at most 100 records, in a shuffled
 * (deterministic) order, as several senders would; then the replays. Fails
 * unless every record is created and every replay is a duplicate.
 */
export async function seed({ baseUrl, writerToken, now = Date.now() }) {
  const f = fleet(now);
  const order = f.records.map((rec, i) => ({ rec, key: prng(i + 1)() }));
  order.sort((a, b) => a.key - b.key);
  const shuffled = order.map((o) => o.rec);
  let created = 0;
  for (let i = 0; i < shuffled.length; i += 100) {
    const answer = await postBatch(baseUrl, writerToken, shuffled.slice(i, i + 100));
    if (answer.created !== Math.min(100, shuffled.length - i)) {
      const bad = answer.items.filter((it) => it.status !== 'created');
      throw new Error(`seeding: not every record was created: ${JSON.stringify(bad.slice(0, 3))}`);
    }
    created += answer.created;
  }
  const again = await postBatch(baseUrl, writerToken, f.replays);
  if (again.duplicates !== f.replays.length) {
    throw new Error(`seeding: replays were not all duplicates: ${JSON.stringify(again).slice(0, 500)}`);
  }
  const count = (o) => f.remediations.filter((r) => r.outcome === o).length;
  return {
    now: iso(f.now),
    namespaces: [...new Set(f.remediations.map((r) => r.namespace))].sort(),
    alerts: new Set(f.remediations.map((r) => r.fingerprint)).size,
    remediations: f.remediations.length,
    records: created,
    replays: again.duplicates,
    completed: count('completed'),
    failed: count('failed'),
    timeout: count('timeout'),
    running: count('running'),
    with_duplicates: f.remediations.filter((r) => r.duplicates > 0).length,
  };
}

if (import.meta.url === `file://${process.argv[1]}` && !process.env.NODE_TEST_CONTEXT) {
  const baseUrl = process.env.REMAUDIT_WEB_BASE_URL;
  const writerToken = process.env.REMAUDIT_WEB_WRITER_TOKEN;
  if (!baseUrl || !writerToken) {
    console.error('seed.mjs: set REMAUDIT_WEB_BASE_URL and REMAUDIT_WEB_WRITER_TOKEN');
    process.exit(2);
  }
  const summary = await seed({ baseUrl, writerToken });
  console.log(JSON.stringify(summary));
}
