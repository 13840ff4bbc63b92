"""PostgreSQL schema, versioned like SQLite's: version N's statements move N-1 to N.

Append a migration; never edit a shipped one. The version numbers are shared with
``SQLITE_MIGRATIONS`` (one logical schema, one dialect file each).

Timestamps stay ISO 8601 text and JSON stays text, exactly as the records carry them, so a
record reads back byte for byte equal on every backend (``jsonb`` would reorder keys and
refuses ``\\u0000``). ``ord`` columns keep insertion order where SQLite uses ``rowid``;
``runs.wake_pending`` replaces SQLite's ``wake:`` marks in ``meta``; ``topic_heads`` holds
each topic's last offset, so concurrent appends serialize on one row and stay gapless.
"""

from __future__ import annotations

# Our tables; finding any of them without ``schema_version`` means a foreign or broken
# schema. Other applications' tables in the same schema are left alone.
POSTGRES_TABLES = (
    "runs", "steps", "crossings", "attempts", "verdicts", "effects", "timers", "messages",
    "approvals", "events", "records", "topic_events", "topic_heads", "meta",
)

POSTGRES_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, agent TEXT NOT NULL, agent_version TEXT NOT NULL,
            status TEXT NOT NULL, input TEXT NOT NULL, seed BIGINT NOT NULL,
            pins TEXT NOT NULL, result TEXT, error TEXT,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            lease_owner TEXT, lease_until TEXT, parent_run_id TEXT,
            wake_pending BOOLEAN NOT NULL DEFAULT false)""",
        "CREATE INDEX runs_status ON runs(status, updated_at, run_id)",
        "CREATE INDEX runs_owner ON runs(lease_owner) WHERE lease_owner IS NOT NULL",
        """CREATE TABLE steps (
            run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
            result TEXT, at TEXT NOT NULL, PRIMARY KEY (run_id, seq))""",
        """CREATE TABLE crossings (
            crossing_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, seq INTEGER NOT NULL,
            boundary TEXT NOT NULL, boundary_version TEXT NOT NULL, action TEXT NOT NULL,
            verifiers TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
            started_at TEXT NOT NULL, model_id TEXT NOT NULL, prompt_id TEXT NOT NULL,
            prompt_version TEXT NOT NULL, committed_hash TEXT, outcome TEXT,
            ended_at TEXT, reason TEXT)""",
        "CREATE INDEX crossings_run ON crossings(run_id)",
        """CREATE TABLE attempts (
            crossing_id TEXT NOT NULL, attempt INTEGER NOT NULL, kind TEXT NOT NULL,
            at TEXT NOT NULL, proposal_hash TEXT, raw TEXT, value TEXT, provenance TEXT,
            error_kind TEXT, error_message TEXT, retry_at TEXT,
            PRIMARY KEY (crossing_id, attempt))""",
        """CREATE TABLE verdicts (
            crossing_id TEXT NOT NULL, attempt INTEGER NOT NULL, verifier TEXT NOT NULL,
            verifier_version TEXT NOT NULL, verdict TEXT NOT NULL, proposal_hash TEXT NOT NULL,
            at TEXT NOT NULL, code TEXT, message TEXT, retryable BOOLEAN, hint TEXT,
            field TEXT, decided_by TEXT, ord BIGINT GENERATED ALWAYS AS IDENTITY,
            PRIMARY KEY (crossing_id, attempt, verifier))""",
        """CREATE TABLE effects (
            key TEXT PRIMARY KEY, run_id TEXT NOT NULL, action TEXT NOT NULL,
            status TEXT NOT NULL, intent_at TEXT NOT NULL, crossing_id TEXT,
            proposal_hash TEXT, performed INTEGER NOT NULL DEFAULT 0, result TEXT,
            error TEXT, done_at TEXT)""",
        "CREATE INDEX effects_run ON effects(run_id)",
        "CREATE INDEX effects_crossing ON effects(crossing_id)",
        """CREATE TABLE timers (
            timer_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, fire_at TEXT NOT NULL,
            purpose TEXT NOT NULL, status TEXT NOT NULL, guard_key TEXT,
            guard_version INTEGER, fired_at TEXT)""",
        "CREATE INDEX timers_due ON timers(fire_at) WHERE status = 'pending'",
        "CREATE INDEX timers_run ON timers(run_id)",
        """CREATE TABLE messages (
            run_id TEXT NOT NULL, message_id TEXT NOT NULL, channel TEXT NOT NULL,
            payload TEXT, received_at TEXT NOT NULL, consumed_seq INTEGER,
            ord BIGINT GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (run_id, message_id))""",
        """CREATE TABLE approvals (
            approval_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, crossing_id TEXT NOT NULL,
            boundary TEXT NOT NULL, proposal_hash TEXT NOT NULL, value TEXT, reason TEXT NOT NULL,
            role TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL,
            sla_due TEXT, fallback TEXT, decided_by TEXT, decided_at TEXT, comment TEXT)""",
        "CREATE INDEX approvals_status ON approvals(status)",
        """CREATE TABLE events (
            event_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id TEXT,
            kind TEXT NOT NULL, data TEXT NOT NULL, at TEXT NOT NULL)""",
        "CREATE INDEX events_run ON events(run_id)",
        """CREATE TABLE records (
            namespace TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL,
            value TEXT, updated_at TEXT NOT NULL, PRIMARY KEY (namespace, key))""",
        """CREATE TABLE topic_events (
            topic TEXT NOT NULL, offset_ BIGINT NOT NULL, key TEXT, payload TEXT,
            headers TEXT NOT NULL, event_time TEXT NOT NULL, appended_at TEXT NOT NULL,
            PRIMARY KEY (topic, offset_))""",
        "CREATE TABLE topic_heads (topic TEXT PRIMARY KEY, last BIGINT NOT NULL)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
}
