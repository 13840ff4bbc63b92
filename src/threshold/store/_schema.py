"""Versioned schema for the SQL backends. Append a migration; never edit a shipped one."""

from __future__ import annotations

SCHEMA_VERSION = 1

# One list of statements per version; version N's statements move a database from N-1 to N.
SQLITE_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, agent TEXT NOT NULL, agent_version TEXT NOT NULL,
            status TEXT NOT NULL, input TEXT NOT NULL, seed INTEGER NOT NULL,
            pins TEXT NOT NULL, result TEXT, error TEXT,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            lease_owner TEXT, lease_until TEXT, parent_run_id TEXT)""",
        "CREATE INDEX runs_status ON runs(status)",
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
                """CREATE TABLE attempts (
            crossing_id TEXT NOT NULL, attempt INTEGER NOT NULL, kind TEXT NOT NULL,
            at TEXT NOT NULL, proposal_hash TEXT, raw TEXT, value TEXT, provenance TEXT,
            error_kind TEXT, error_message TEXT, retry_at TEXT,
            PRIMARY KEY (crossing_id, attempt))""",
        """CREATE TABLE verdicts (
            crossing_id TEXT NOT NULL, attempt INTEGER NOT NULL, verifier TEXT NOT NULL,
            verifier_version TEXT NOT NULL, verdict TEXT NOT NULL, proposal_hash TEXT NOT NULL,
            at TEXT NOT NULL, code TEXT, message TEXT, retryable INTEGER, hint TEXT,
            field TEXT, decided_by TEXT,
            PRIMARY KEY (crossing_id, attempt, verifier))""",
        """CREATE TABLE effects (
            key TEXT PRIMARY KEY, run_id TEXT NOT NULL, action TEXT NOT NULL,
            status TEXT NOT NULL, intent_at TEXT NOT NULL, crossing_id TEXT,
            proposal_hash TEXT, performed INTEGER NOT NULL DEFAULT 0, result TEXT,
            error TEXT, done_at TEXT)""",
        "CREATE INDEX effects_run ON effects(run_id)",
        """CREATE TABLE timers (
            timer_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, fire_at TEXT NOT NULL,
            purpose TEXT NOT NULL, status TEXT NOT NULL, guard_key TEXT,
            guard_version INTEGER, fired_at TEXT)""",
        "CREATE INDEX timers_due ON timers(status, fire_at)",
        """CREATE TABLE messages (
            run_id TEXT NOT NULL, message_id TEXT NOT NULL, channel TEXT NOT NULL,
            payload TEXT, received_at TEXT NOT NULL, consumed_seq INTEGER,
            PRIMARY KEY (run_id, message_id))""",
        """CREATE TABLE approvals (
            approval_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, crossing_id TEXT NOT NULL,
            boundary TEXT NOT NULL, proposal_hash TEXT NOT NULL, value TEXT, reason TEXT NOT NULL,
            role TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL,
            sla_due TEXT, fallback TEXT, decided_by TEXT, decided_at TEXT, comment TEXT)""",
        "CREATE INDEX approvals_status ON approvals(status)",
        """CREATE TABLE events (
            event_id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, kind TEXT NOT NULL,
            data TEXT NOT NULL, at TEXT NOT NULL)""",
        "CREATE INDEX events_run ON events(run_id)",
        """CREATE TABLE records (
            namespace TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL,
            value TEXT, updated_at TEXT NOT NULL, PRIMARY KEY (namespace, key))""",
        """CREATE TABLE topic_events (
            topic TEXT NOT NULL, offset_ INTEGER NOT NULL, key TEXT, payload TEXT,
            headers TEXT NOT NULL, event_time TEXT NOT NULL, appended_at TEXT NOT NULL,
            PRIMARY KEY (topic, offset_))""",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
}
