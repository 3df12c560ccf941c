"""Schemathesis hooks for scripts/schemathesis.

The OpenAPI document states every rule of a single value (types, formats,
lengths, patterns, ranges). A few rules of the server tie values together or
depend on its clock or on what it stores, and no schema can state them; the
document says them in words. These hooks keep generated requests inside them,
so that a request the document calls valid is one the server must take:

- a record's times lie in the last hours (the server refuses times before
  2000, more than an hour ahead of its clock, or older than the retention age),
  with `completion_time` not before `start_time`;
- `alert_processing_name`, an alias, matches `remediation_processing_name`;
- `failure_reason` is at most 16384 bytes and the status snapshot holds no NUL;
- `duplicate_count` and `max_rows` are written as integers (JSON Schema also counts `3.0` as
  one; the record's decoder in remaudit-model does not);
- a window has `since` before `until`, at most 90 days apart, at most two of
  `since`, `until` and `window`, and ends within the years 0000 to 9999;
- `cursor` is a token the server issued, so a made-up one is dropped;
- a hold, a release or a delete gives its `reason` in the query or in the
  body (the document can mark neither required), and not two different ones.
- a statement over the archive is SQL the tables answer: any text the
  document admits is replaced by one (the engine's grammar is no schema).

Only values that are already valid are changed, so a request generated to
break a rule still breaks it (schemathesis revalidates after each hook).
"""

import re
from datetime import datetime, timedelta, timezone

import schemathesis
from schemathesis.core import NOT_SET

TIME_FIELDS = ("start_time", "completion_time", "timeout_time", "last_duplicate_time", "event_time")
MAX_FAILURE_REASON_BYTES = 16384
MAX_WINDOW = timedelta(days=90)
MAX_SQL_CHARS = 16384
# One row whatever the archive holds, so that any `max_rows` takes it.
ARCHIVE_SQL = "SELECT count(*) AS n, max(start_time) AS newest FROM remediation_audit"


# The document's pattern of a time (remaudit_api::openapi::DATE_TIME_PATTERN).
TIME = re.compile(
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


def is_time(value):
    """Whether `value` is a real time the pattern admits (not, say, 30 February)."""
    if not isinstance(value, str) or TIME.match(value) is None:
        return False
    # Python has no year 0, which RFC 3339 and the server have.
    return parse_time("2000" + value[4:] if value.startswith("0000") else value) is not None


def parse_time(value):
    """The time `value` holds, or None when it is not an RFC 3339 time."""
    if not isinstance(value, str) or len(value) < 20:
        return None
    try:
        at = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def text(at):
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def without_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    return value


def fix_record(record, now):
    if not isinstance(record, dict):
        return
    for field in TIME_FIELDS:
        if is_time(record.get(field)):
            ago = timedelta(hours=1) if field == "start_time" else timedelta(minutes=30)
            record[field] = text(now - ago)
    alias, name = record.get("alert_processing_name"), record.get("remediation_processing_name")
    if isinstance(alias, str) and isinstance(name, str) and alias and name and alias != name:
        record["alert_processing_name"] = name
    count = record.get("duplicate_count")
    if isinstance(count, float) and count.is_integer():
        # JSON Schema counts 3.0 as an integer; the server reads integers as written.
        record["duplicate_count"] = int(count)
    reason = record.get("failure_reason")
    if (
        isinstance(reason, str)
        and len(reason) <= MAX_FAILURE_REASON_BYTES
        and len(reason.encode()) > MAX_FAILURE_REASON_BYTES
    ):
        record["failure_reason"] = reason.encode()[:MAX_FAILURE_REASON_BYTES].decode(errors="ignore")
    statuses = record.get("service_crd_statuses")
    if isinstance(statuses, dict):
        record["service_crd_statuses"] = without_nul(statuses)


def fix_window(query, analytics, now):
    if analytics:
        # Answers echo the window's ends, which must stay within years 0000 to 9999:
        # keep far ends out of the way.
        for end, at in (("since", now - timedelta(days=1)), ("until", now)):
            value = query.get(end)
            if is_time(value) and (parse_time(value) is None or value[:4] in ("0000", "0001", "9999")):
                query[end] = text(at)
    if is_time(query.get("since")) and is_time(query.get("until")):
        if analytics:
            query.pop("window", None)
        since, until = parse_time(query["since"]), parse_time(query["until"])
        if since is None or until is None:
            # A time Python cannot hold (such as year 0): keep one end only.
            del query["until"]
        elif since >= until or (analytics and until - since > MAX_WINDOW):
            try:
                query["since"] = text(until - timedelta(hours=1))
            except OverflowError:
                query["until"] = text(since + timedelta(hours=1))
    if (
        analytics
        and is_time(query.get("since"))
        and query.get("until") is None
        and query.get("window") is None
    ):
        # The window runs from `since` to now: it must start in the last 90 days.
        since = parse_time(query["since"])
        if since is None or not now - MAX_WINDOW < since < now:
            query["since"] = text(now - timedelta(days=1))


ADMIN_ACTIONS = (
    ("PUT", "/api/v1/audit/remediation-orchestration/{id}/legal-hold"),
    ("DELETE", "/api/v1/audit/remediation-orchestration/{id}/legal-hold"),
    ("DELETE", "/api/v1/audit/remediation-orchestration/{id}"),
)


def fix_reason(case):
    """One reason per admin action: added to the query when neither the query
    nor the body has one, and the body's made the query's when both do."""
    if not isinstance(case.query, dict):
        case.query = {}
    query = case.query.get("reason")
    body = case.body.get("reason") if isinstance(case.body, dict) else None
    if query is None and (case.body is None or case.body is NOT_SET):
        case.query["reason"] = "schemathesis"
    elif isinstance(query, str) and isinstance(body, str) and query != body:
        # A new value, not an edit in place: schemathesis sends what the
        # case's `body` is set to.
        case.body = {**case.body, "reason": query}


@schemathesis.hook
def map_case(context, case):
    if isinstance(case.query, dict):
        case.query = {k: v for k, v in case.query.items() if v is not None}
    path = case.operation.path
    now = datetime.now(timezone.utc)
    if case.method.upper() == "POST" and path.startswith("/api/v1/audit/remediation-orchestration"):
        if isinstance(case.body, list):
            for record in case.body:
                fix_record(record, now)
        else:
            fix_record(case.body, now)
    if case.method.upper() == "GET" and isinstance(case.query, dict):
        cursor = case.query.get("cursor")
        if isinstance(cursor, str) and cursor:
            del case.query["cursor"]
        if path == "/api/v1/audit/remediation-orchestration":
            fix_window(case.query, analytics=False, now=now)
        elif path.startswith("/api/v1/audit/analytics/"):
            fix_window(case.query, analytics=True, now=now)
        elif path == "/api/v1/admin/log":
            fix_window(case.query, analytics=False, now=now)
        elif path == "/api/v1/admin/verify":
            # `after` is a cursor the server issued, so a made-up one is
            # dropped; a valid range is brought within the server's bounds
            # (at most 31 days, `since` before `until`).
            case.query.pop("after", None)
            for end, at in (("since", now - timedelta(days=1)), ("until", now)):
                if is_time(case.query.get(end)):
                    case.query[end] = text(at)
    if case.method.upper() == "POST" and path == "/api/v1/archive/sql" and isinstance(case.body, dict):
        sql = case.body.get("sql")
        if isinstance(sql, str) and 1 <= len(sql) <= MAX_SQL_CHARS:
            case.body = {**case.body, "sql": ARCHIVE_SQL}
        rows = case.body.get("max_rows")
        if isinstance(rows, float) and rows.is_integer():
            # As `duplicate_count`: the server reads integers as written.
            case.body = {**case.body, "max_rows": int(rows)}
    if (case.method.upper(), path) in ADMIN_ACTIONS:
        fix_reason(case)
    return case
