"""PostgreSQL schema, versioned like SQLite's: version N's statements move N-1 to N, and
the check run when a store opens.

Append a migration; never edit a shipped one. The version numbers are shared with
``SQLITE_MIGRATIONS`` (one logical schema, one dialect file each).

Timestamps stay ISO 8601 text and JSON stays text, exactly as the records carry them, so a
record reads back byte for byte equal on every backend (``jsonb`` would reorder keys and
refuses ``\\u0000``). ``ord`` columns keep insertion order where SQLite uses ``rowid``;
``runs.wake_pending`` replaces SQLite's ``wake:`` marks in ``meta``; ``topic_heads`` holds
each topic's last offset, so concurrent appends serialize on one row and stay gapless.
Text is ``COLLATE "C"``: ISO timestamps and ids compare and sort bytewise, as in SQLite,
whatever the database's default collation.
"""

from __future__ import annotations

from typing import Any

import psycopg

from threshold.errors import SchemaVersionError, StoreError
from threshold.store._schema import SCHEMA_VERSION
from threshold.store._url import redact_url

T = 'TEXT COLLATE "C"'  # bytewise, whatever the database default

# Our tables; finding any of them without ``schema_version`` means a foreign or broken
# schema. Other applications' tables in the same schema are left alone.
POSTGRES_TABLES = (
    "runs", "steps", "crossings", "attempts", "verdicts", "effects", "timers", "messages",
    "approvals", "events", "records", "topic_events", "topic_heads", "meta",
)

POSTGRES_MIGRATIONS: dict[int, list[str]] = {
    1: [
        f"""CREATE TABLE runs (
            run_id {T} PRIMARY KEY, agent {T} NOT NULL, agent_version {T} NOT NULL,
            status {T} NOT NULL, input {T} NOT NULL, seed BIGINT NOT NULL,
            pins {T} NOT NULL, result {T}, error {T},
            created_at {T} NOT NULL, updated_at {T} NOT NULL,
            lease_owner {T}, lease_until {T}, parent_run_id {T},
            wake_pending BOOLEAN NOT NULL DEFAULT false)""",
        "CREATE INDEX runs_status ON runs(status, updated_at, run_id)",
        "CREATE INDEX runs_owner ON runs(lease_owner) WHERE lease_owner IS NOT NULL",
        f"""CREATE TABLE steps (
            run_id {T} NOT NULL, seq INTEGER NOT NULL, kind {T} NOT NULL, name {T} NOT NULL,
            result {T}, at {T} NOT NULL, PRIMARY KEY (run_id, seq))""",
        f"""CREATE TABLE crossings (
            crossing_id {T} PRIMARY KEY, run_id {T} NOT NULL, seq INTEGER NOT NULL,
            boundary {T} NOT NULL, boundary_version {T} NOT NULL, action {T} NOT NULL,
            verifiers {T} NOT NULL, status {T} NOT NULL, attempts INTEGER NOT NULL,
            started_at {T} NOT NULL, model_id {T} NOT NULL, prompt_id {T} NOT NULL,
            prompt_version {T} NOT NULL, committed_hash {T}, outcome {T},
            ended_at {T}, reason {T})""",
        "CREATE INDEX crossings_run ON crossings(run_id)",
        f"""CREATE TABLE attempts (
            crossing_id {T} NOT NULL, attempt INTEGER NOT NULL, kind {T} NOT NULL,
            at {T} NOT NULL, proposal_hash {T}, raw {T}, value {T}, provenance {T},
            error_kind {T}, error_message {T}, retry_at {T},
            PRIMARY KEY (crossing_id, attempt))""",
        f"""CREATE TABLE verdicts (
            crossing_id {T} NOT NULL, attempt INTEGER NOT NULL, verifier {T} NOT NULL,
            verifier_version {T} NOT NULL, verdict {T} NOT NULL, proposal_hash {T} NOT NULL,
            at {T} NOT NULL, code {T}, message {T}, retryable BOOLEAN, hint {T},
            field {T}, decided_by {T}, ord BIGINT GENERATED ALWAYS AS IDENTITY,
            PRIMARY KEY (crossing_id, attempt, verifier))""",
        f"""CREATE TABLE effects (
            key {T} PRIMARY KEY, run_id {T} NOT NULL, action {T} NOT NULL,
            status {T} NOT NULL, intent_at {T} NOT NULL, crossing_id {T},
            proposal_hash {T}, performed INTEGER NOT NULL DEFAULT 0, result {T},
            error {T}, done_at {T})""",
        "CREATE INDEX effects_run ON effects(run_id)",
        "CREATE INDEX effects_crossing ON effects(crossing_id)",
        f"""CREATE TABLE timers (
            timer_id {T} PRIMARY KEY, run_id {T} NOT NULL, fire_at {T} NOT NULL,
            purpose {T} NOT NULL, status {T} NOT NULL, guard_key {T},
            guard_version INTEGER, fired_at {T})""",
        "CREATE INDEX timers_due ON timers(fire_at) WHERE status = 'pending'",
        "CREATE INDEX timers_run ON timers(run_id)",
        f"""CREATE TABLE messages (
            run_id {T} NOT NULL, message_id {T} NOT NULL, channel {T} NOT NULL,
            payload {T}, received_at {T} NOT NULL, consumed_seq INTEGER,
            ord BIGINT GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (run_id, message_id))""",
        f"""CREATE TABLE approvals (
            approval_id {T} PRIMARY KEY, run_id {T} NOT NULL, crossing_id {T} NOT NULL,
            boundary {T} NOT NULL, proposal_hash {T} NOT NULL, value {T}, reason {T} NOT NULL,
            role {T} NOT NULL, created_at {T} NOT NULL, status {T} NOT NULL,
            sla_due {T}, fallback {T}, decided_by {T}, decided_at {T}, comment {T})""",
        "CREATE INDEX approvals_status ON approvals(status)",
        f"""CREATE TABLE events (
            event_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id {T},
            kind {T} NOT NULL, data {T} NOT NULL, at {T} NOT NULL)""",
        "CREATE INDEX events_run ON events(run_id)",
        f"""CREATE TABLE records (
            namespace {T} NOT NULL, key {T} NOT NULL, version INTEGER NOT NULL,
            value {T}, updated_at {T} NOT NULL, PRIMARY KEY (namespace, key))""",
        f"""CREATE TABLE topic_events (
            topic {T} NOT NULL, offset_ BIGINT NOT NULL, key {T}, payload {T},
            headers {T} NOT NULL, event_time {T} NOT NULL, appended_at {T} NOT NULL,
            PRIMARY KEY (topic, offset_))""",
        f"CREATE TABLE topic_heads (topic {T} PRIMARY KEY, last BIGINT NOT NULL)",
        f"CREATE TABLE meta (key {T} PRIMARY KEY, value {T} NOT NULL)",
    ],
}


def ensure_schema(url: str, migrate: bool) -> str:
    """Check the schema on ``url``'s search_path (create it when empty, upgrade it with
    ``migrate``) over one short synchronous connection; return the schema's name. Raises
    ``SchemaVersionError`` for an older (without ``migrate``) or newer schema."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {redact_url(url)}: {exc}") from exc
    try:
        with conn.transaction():
            row = conn.execute("SELECT current_schema()").fetchone()
            if row is None or row[0] is None:
                raise StoreError(f"{redact_url(url)}: no schema on the search_path exists")
            schema = str(row[0])
            # Workers starting together on a fresh database migrate one at a time.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                         (f"threshold.schema.{schema}",))
            _migrate(conn, redact_url(url), schema, migrate)
        return schema
    finally:
        conn.close()


def _migrate(conn: psycopg.Connection[Any], url: str, schema: str, migrate: bool) -> None:
    tables = {r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
        (schema,)).fetchall()}
    if "schema_version" not in tables:
        if tables & set(POSTGRES_TABLES):
            raise SchemaVersionError(url, 0, SCHEMA_VERSION)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (0)")
        found, migrate = 0, True
    else:
        version_row = conn.execute("SELECT version FROM schema_version").fetchone()
        found = 0 if version_row is None else int(version_row[0])
    if found > SCHEMA_VERSION or (found < SCHEMA_VERSION and not migrate):
        raise SchemaVersionError(url, found, SCHEMA_VERSION)
    for version in range(found + 1, SCHEMA_VERSION + 1):
        for statement in POSTGRES_MIGRATIONS[version]:
            conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = %s", (version,))
