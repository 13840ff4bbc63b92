"""One error tree, split by who must react.

- ``Signal``: raised on purpose to steer control flow (a run suspends, a crossing is refused).
- ``UsageError``: the caller must change something (bad config, unknown model, bad data).
- ``RuntimeFailure``: something outside the caller's code failed (transport, store, replay).
"""

from __future__ import annotations

from typing import Any


class ThresholdError(Exception):
    """Base of every error this package raises on purpose."""


# --- signals -----------------------------------------------------------------------------


class Signal(ThresholdError):
    """Raised on purpose; the runtime catches these and records them."""


class Suspend(Signal):
    """The run waits durably (a timer, a message, a human) and will be resumed later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunKilled(Signal):
    """A kill switch stopped this run."""

    def __init__(self, run_id: str, principal: str, reason: str) -> None:
        super().__init__(f"run {run_id} was killed by {principal}: {reason}")
        self.run_id, self.principal, self.reason = run_id, principal, reason


class ThrottleExceeded(Signal):
    """A durable throttle refused one more side effect; nothing was consumed or performed."""

    def __init__(self, rule: str, reason: str, policy_version: str) -> None:
        super().__init__(f"throttled by {rule} (policy {policy_version}): {reason}")
        self.rule, self.reason, self.policy_version = rule, reason, policy_version


# --- usage errors ------------------------------------------------------------------------


class UsageError(ThresholdError):
    """The caller must change something: configuration, arguments, definitions or data."""


class ConfigError(UsageError):
    """A configuration value is missing or invalid."""


class UnknownModelError(UsageError):
    """A model spec names no model this runtime can serve."""

    def __init__(self, spec: str, known: list[str]) -> None:
        super().__init__(f"unknown model {spec!r}; known: {', '.join(sorted(known))}")
        self.spec, self.known = spec, known


class UnknownAgentError(UsageError):
    """A run names an agent definition (or version) that is not registered."""

    def __init__(self, name: str, version: str) -> None:
        super().__init__(f"no agent definition {name!r} version {version!r} is registered")
        self.name, self.version = name, version


class MissingExtraError(UsageError):
    """An optional dependency is not installed; the message has the exact install line."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"{module!r} is not installed; install it with: pip install 'threshold[{extra}]'"
        )
        self.extra, self.module = extra, module


class SchemaVersionError(UsageError):
    """The database was written by an older or newer schema than this code understands."""

    def __init__(self, url: str, found: int, expected: int) -> None:
        direction = "older" if found < expected else "newer"
        hint = (
            "open it once with migrate=True to upgrade it"
            if found < expected
            else "upgrade threshold to read it"
        )
        super().__init__(
            f"store {url} has schema version {found}, this threshold expects {expected} "
            f"(the database is {direction}); {hint}"
        )
        self.url, self.found, self.expected = url, found, expected


class DataError(UsageError):
    """A data file has a bad row; names the file and the line."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.detail = path, line, message


class UnauthorizedError(UsageError):
    """A principal lacks the role an action requires."""

    def __init__(self, principal: str, action: str, allowed: list[str]) -> None:
        super().__init__(
            f"{principal!r} may not {action}; allowed: {', '.join(allowed) or 'nobody'}"
        )
        self.principal, self.action, self.allowed = principal, action, allowed


class NotFoundError(UsageError):
    """A run, approval, topic or record does not exist."""


class IllegalTransitionError(UsageError):
    """A state machine refused a move its transition table does not allow from the state the
    row is in (or a state it does not declare)."""

    def __init__(self, machine: str, row_id: str, from_state: str, to_state: str,
                 allowed: list[str]) -> None:
        super().__init__(f"state machine {machine!r}, row {row_id!r}: {from_state} -> "
                         f"{to_state} is not allowed; allowed from {from_state}: "
                         f"{', '.join(sorted(allowed)) or 'nothing (terminal)'}")
        self.machine, self.row_id = machine, row_id
        self.from_state, self.to_state, self.allowed = from_state, to_state, allowed


class MigrationRefused(UsageError):
    """A run cannot be migrated to another agent version: it is finished or executing, or
    the new definition does not replay its journal."""

    def __init__(self, run_id: str, to_version: str, reason: str) -> None:
        super().__init__(f"run {run_id} not migrated to version {to_version}: {reason}")
        self.run_id, self.to_version, self.reason = run_id, to_version, reason


class UnroutableTaskError(UsageError):
    """A delegated sub-task has a type that no sub-agent of the routing table handles."""

    def __init__(self, orchestrator: str, task_type: str, known: list[str]) -> None:
        super().__init__(f"orchestrator {orchestrator!r} has no route for task type "
                         f"{task_type!r}; routed types: {', '.join(sorted(known)) or 'none'}")
        self.orchestrator, self.task_type, self.known = orchestrator, task_type, known


# --- runtime failures --------------------------------------------------------------------


class RuntimeFailure(ThresholdError):
    """Something outside the caller's code failed."""


class TransportError(RuntimeFailure):
    """The model call failed before it produced text: never fed back to the model.

    ``kind`` is one of ``timeout``, ``rate_limited``, ``server``, ``connection``,
    ``malformed``, ``client``. ``retry_after`` is in seconds when the server said so.
    """

    kind = "transport"

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable, self.retry_after = retryable, retry_after


class ModelTimeout(TransportError):
    kind = "timeout"


class RateLimited(TransportError):
    kind = "rate_limited"


class ServerError(TransportError):
    kind = "server"


class ConnectionFailed(TransportError):
    kind = "connection"


class MalformedResponse(TransportError):
    """The bytes on the wire could not be read as a response (not: the model wrote bad JSON)."""

    kind = "malformed"


class ClientRequestError(TransportError):
    """The server refused the request itself (4xx other than 429); retrying will not help."""

    kind = "client"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class RealModelCallBlocked(TransportError):
    """A real model was called while real calls are blocked (tests, by default)."""

    kind = "blocked"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"a real model call to {model!r} was blocked; "
            "tests opt in with threshold.models.allow_model_requests()",
            retryable=False,
        )


class EffectFailed(RuntimeFailure):
    """An effect's function raised; recorded, and raised again identically on replay."""

    def __init__(self, action: str, key: str, message: str) -> None:
        super().__init__(f"effect {action} ({key}) failed: {message}")
        self.action, self.key, self.message = action, key, message


class StoreError(RuntimeFailure):
    """The store failed or holds something it should not."""


class StaleWriteError(RuntimeFailure):
    """A compare-and-swap lost: the row moved on since it was read."""

    def __init__(self, key: str, expected: int, actual: int | None) -> None:
        super().__init__(f"stale write to {key}: expected version {expected}, found {actual}")
        self.key, self.expected, self.actual = key, expected, actual


class ConsumerFailed(RuntimeFailure):
    """A topic consumer's handler raised; its batch's offset was not committed, so the
    events are delivered again (their recorded effects are not performed again)."""

    def __init__(self, topic: str, consumer: str, offset: int, message: str) -> None:
        super().__init__(f"consumer {consumer!r} of topic {topic!r} failed at offset "
                         f"{offset}: {message}")
        self.topic, self.consumer, self.offset, self.message = topic, consumer, offset, message


class CoordinationFailed(RuntimeFailure):
    """A coordination pattern (delegation, fan-out, saga) could not reach a result."""


class DelegationFailed(CoordinationFailed):
    """A fail-fast sub-agent gave no result, or the merged result is incomplete."""

    def __init__(self, orchestrator: str, child: str | None, reason: str) -> None:
        where = f" (child {child})" if child else ""
        super().__init__(f"delegation {orchestrator!r} failed{where}: {reason}")
        self.orchestrator, self.child, self.reason = orchestrator, child, reason


class GatherFailed(CoordinationFailed):
    """A fan-out gathered too few accepted proposals, or its vote found no quorum."""

    def __init__(self, fanout: str, reason: str) -> None:
        super().__init__(f"fan-out {fanout!r} failed: {reason}")
        self.fanout, self.reason = fanout, reason


class SagaAborted(CoordinationFailed):
    """A saga stopped and its committed steps were compensated, newest first."""

    def __init__(self, saga: str, step: str | None, reason: str,
                 compensated: list[str]) -> None:
        at = f" at step {step}" if step else ""
        super().__init__(f"saga {saga!r} aborted{at}: {reason}; compensated "
                         f"{', '.join(compensated) or 'nothing'}")
        self.saga, self.step, self.reason, self.compensated = saga, step, reason, compensated


class StepFailed(RuntimeFailure):
    """A supervised child's step raised; recorded, and raised again identically on replay."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"step {name} failed: {message}")
        self.name, self.message = name, message


class RestartLimitExceeded(RuntimeFailure):
    """A supervisor saw more restarts than its intensity allows and nobody let it go on."""

    def __init__(self, supervisor: str, child: str, restarts: int, within_s: float,
                 reason: str) -> None:
        super().__init__(f"supervisor {supervisor!r}: child {child!r} failed {restarts} times "
                         f"within {within_s:g} s; {reason}")
        self.supervisor, self.child, self.restarts = supervisor, child, restarts
        self.within_s, self.reason = within_s, reason


class NondeterminismError(RuntimeFailure):
    """Re-executing a run took a different path than its journal records."""

    def __init__(self, run_id: str, step: int, expected: Any, recorded: Any) -> None:
        super().__init__(
            f"run {run_id} diverged from its journal at step {step}: "
            f"the code now does {expected!r}, the journal recorded {recorded!r}"
        )
        self.run_id, self.step, self.expected, self.recorded = run_id, step, expected, recorded


class CrashInjected(BaseException):
    """Raised by in-process crash injection; a BaseException so ordinary handlers miss it."""

    def __init__(self, window: str) -> None:
        super().__init__(window)
        self.window = window
