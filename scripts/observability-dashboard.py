#!/usr/bin/env python3
"""Checks a Grafana dashboard of remaudit (run by scripts/observability-check).

usage: observability-dashboard.py DASHBOARD.json PROMTOOL DATABASE_URL MIGRATIONS_DIR

- the file is JSON with the fields an import needs (__inputs, uid, title,
  schemaVersion, templating, panels);
- panel ids are unique, rows included;
- every panel but a row has a datasource, one of the dashboard's datasource
  variables, and each of its targets names the same datasource type;
- every Prometheus query parses: Grafana's variables are replaced by
  harmless values and promtool checks them as recording rules;
- every PostgreSQL query runs: a scratch database gets the project's
  migrations (each file in one transaction, as sqlx applies them) and each
  query, its macros expanded, runs there, so a table, column or function
  that the migrations do not make fails with PostgreSQL's own error;
- the analytics panels give known answers on seeded remediations (success
  rate, p95 duration within the rollup's error, the top failure phase).

OBS_DEBUG=1 prints every PostgreSQL answer.

Prints each problem on stderr and exits 1 when there is any.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

PROMETHEUS = "prometheus"
POSTGRES = "grafana-postgresql-datasource"

problems = []


def problem(text):
    problems.append(text)


def all_panels(panels):
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def promql(expr):
    """The expression with Grafana's variables replaced, for promtool."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    expr = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}?", "x", expr)
    # label_values(metric, label) is Grafana's, not PromQL: check the metric.
    m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", expr)
    return m.group(1) if m else expr


def sql(text):
    """The query with Grafana's macros expanded over the last day."""
    text = re.sub(
        r"\$__timeFilter\(([^)]*)\)",
        r"\1 BETWEEN now() - interval '1 day' AND now()",
        text,
    )
    text = re.sub(r"\$\{?remediation_namespace\}?", "", text)
    if "$" in re.sub(r"\$\$", "", text):
        problem(f"a Grafana variable or macro the check does not expand: {text}")
    return text


# 100 remediations finished an hour ago (or at midnight, when that is later,
# so that their day's bucket starts inside the panels' last day whatever the
# time of day the check runs): 80 completed, 15 failed (10 in
# workflow_execution, 5 in ai_analysis), 5 timed out; they took 1 to 100 s.
# The rollups are rebuilt from them, as after a bulk load.
SEED = """
INSERT INTO remediation_audit (alert_fingerprint, remediation_name, overall_phase, start_time,
    completion_time, failure_phase, phase_rank, event_id, event_time, duration_us, duration_bin)
SELECT 'fp-' || (i % 7), 'rr-' || i,
       CASE WHEN i <= 80 THEN 'completed' WHEN i <= 95 THEN 'failed' ELSE 'timeout' END,
       t.start, t.start + i * interval '1 second',
       CASE WHEN i BETWEEN 81 AND 90 THEN 'workflow_execution'
            WHEN i BETWEEN 91 AND 95 THEN 'ai_analysis' END,
       9, gen_random_uuid(), now(), i * 1000000, remaudit_duration_bin(i * 1000000)
FROM generate_series(1, 100) AS i,
     (SELECT greatest(date_trunc('hour', now()) - interval '1 hour',
                      date_trunc('day', now(), 'UTC')) AS start) AS t;
SELECT remaudit_rebuild_rollups();
"""


def check_answers(answers, url):
    """The analytics panels give the seeded data's known answers."""

    def answer(title):
        found = [a for where, a in answers.items() if f"({title!r})" in where]
        if not found:
            problem(f"no panel titled {title!r} to check against the seeded data")
            return None
        return found[0]

    rate = answer("Success rate")
    if rate is not None and (not rate or abs(float(rate) - 80.0) > 1e-9):
        problem(f"'Success rate' answers {rate!r} for 80 completed of 100 finished")
    exact = psql(url, "-A", "-t", "-c",
                 "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_us) / 1e6 "
                 "FROM remediation_audit").stdout.strip()
    p95 = answer("p95 duration")
    if p95 is not None and (not p95 or abs(float(p95) / float(exact) - 1) > 0.02):
        problem(f"'p95 duration' answers {p95!r}; percentile_cont says {exact} (1 % bins allow 2 %)")
    top = answer("Top failure phases")
    if top is not None and not top.startswith("workflow_execution|failed|10|"):
        problem(f"'Top failure phases' does not start with workflow_execution's 10 failures: {top!r}")


def psql(url, *args):
    return subprocess.run(
        ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", *args],
        text=True,
        capture_output=True,
    )


def check_sql(queries, url, migrations):
    scratch = f"remaudit_obs_check_{os.getpid()}"
    created = psql(url, "-c", f"CREATE DATABASE {scratch}")
    if created.returncode != 0:
        problem(
            f"cannot create a scratch database through {re.sub(r'//[^@]*@', '//', url)}: "
            f"{created.stderr.strip()} (is PostgreSQL running? set REMAUDIT_TEST_DATABASE_URL)"
        )
        return
    scratch_url = re.sub(r"/[^/?]*(\?|$)", f"/{scratch}\\1", url.split("://", 1)[1], count=1)
    scratch_url = url.split("://", 1)[0] + "://" + scratch_url
    try:
        for name in sorted(os.listdir(migrations)):
            if name.endswith(".sql"):
                done = psql(scratch_url, "-1", "-f", os.path.join(migrations, name))
                if done.returncode != 0:
                    problem(f"migration {name} does not apply: {done.stderr.strip()}")
                    return
        seeded = psql(scratch_url, "-c", SEED)
        if seeded.returncode != 0:
            problem(f"cannot seed the scratch database: {seeded.stderr.strip()}")
            return
        answers = {}
        for where, query in queries:
            ran = psql(scratch_url, "-A", "-t", "-F", "|", "-c", sql(query))
            if ran.returncode != 0:
                problem(f"{where}: PostgreSQL refuses the query: {ran.stderr.strip()}")
            answers[where] = ran.stdout.strip()
        check_answers(answers, scratch_url)
        if os.environ.get("OBS_DEBUG"):
            print(json.dumps(answers, indent=1))
    finally:
        psql(url, "-c", f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)")


def main():
    path, promtool, url, migrations = sys.argv[1:5]
    try:
        with open(path, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"{path}: not a JSON dashboard: {e}", file=sys.stderr)
        return 1

    for field in ("__inputs", "uid", "title", "schemaVersion", "templating", "panels"):
        if field not in dashboard:
            problem(f"no {field}: Grafana's import needs it")
    inputs = {i.get("pluginId") for i in dashboard.get("__inputs", [])}
    for plugin in (PROMETHEUS, POSTGRES):
        if plugin not in inputs:
            problem(f"__inputs has no {plugin} datasource")

    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    sources = {
        f"${{{name}}}": v.get("query")
        for name, v in variables.items()
        if v.get("type") == "datasource"
    }

    def source_of(where, holder, required):
        ds = holder.get("datasource")
        if not isinstance(ds, dict):
            if required:
                problem(f"{where}: no datasource")
            return None
        if sources.get(ds.get("uid")) != ds.get("type"):
            problem(
                f"{where}: datasource {ds} is not one of the dashboard's datasource variables {sources}"
            )
        return ds.get("type")

    exprs, queries, seen = [], [], {}
    for panel in all_panels(dashboard.get("panels", [])):
        pid = panel.get("id")
        where = f"panel {pid} ({panel.get('title')!r})"
        if pid in seen:
            problem(f"{where}: id {pid} is also panel {seen[pid]!r}'s")
        seen[pid] = panel.get("title")
        if panel.get("type") == "row":
            continue
        kind = source_of(where, panel, required=True)
        targets = panel.get("targets") or []
        if not targets:
            problem(f"{where}: no query")
        for target in targets:
            twhere = f"{where} target {target.get('refId')}"
            tkind = source_of(twhere, target, required=False) or kind
            if kind and tkind != kind:
                problem(f"{twhere}: datasource {tkind} differs from the panel's {kind}")
            if tkind == PROMETHEUS:
                if not target.get("expr"):
                    problem(f"{twhere}: no expr")
                exprs.append((twhere, target.get("expr", "")))
            elif tkind == POSTGRES:
                if not target.get("rawSql"):
                    problem(f"{twhere}: no rawSql")
                queries.append((twhere, target.get("rawSql", "")))
    for name, v in variables.items():
        if v.get("type") != "query":
            continue
        kind = source_of(f"variable {name}", v, required=True)
        query = v.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if kind == PROMETHEUS:
            exprs.append((f"variable {name}", query or ""))
        elif kind == POSTGRES:
            queries.append((f"variable {name}", query or ""))

    # Prometheus: one recording rule per query, checked by promtool.
    with tempfile.TemporaryDirectory() as tmp:
        rules = {
            "groups": [
                {
                    "name": "dashboard",
                    "rules": [
                        {"record": f"dashboard:query_{i}", "expr": promql(expr)}
                        for i, (_, expr) in enumerate(exprs)
                    ],
                }
            ]
        }
        rules_file = os.path.join(tmp, "dashboard-queries.json")
        with open(rules_file, "w", encoding="utf-8") as f:
            json.dump(rules, f)  # JSON is YAML: promtool reads it.
        checked = subprocess.run(
            [promtool, "check", "rules", rules_file], text=True, capture_output=True
        )
        if checked.returncode != 0:
            # promtool names the rule by its index; map it back to the panel.
            text = checked.stdout + checked.stderr
            for i, (where, expr) in enumerate(exprs):
                if f'"dashboard:query_{i}"' in text:
                    problem(f"{where}: PromQL does not parse: {expr}")
            problem(f"promtool refuses the dashboard's queries:\n{text.strip()}")

    check_sql(queries, url, migrations)

    for p in problems:
        print(f"{path}: {p}", file=sys.stderr)
    if not problems:
        print(
            f"{path}: {len(seen)} panels, {len(exprs)} Prometheus and {len(queries)} PostgreSQL queries check out"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
