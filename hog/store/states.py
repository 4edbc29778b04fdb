"""Task and hog states and the moves allowed between them."""

WAITING = "waiting"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
BLOCKED = "blocked"  # parents have not ended as its dependencies ask
HELD = "held"  # submitted with --hold: waits for `release`

# The states of schema 1, whose CHECK constraint lists them: its DDL must not change.
SCHEMA_V1_TASK_STATES = (WAITING, RUNNING, DONE, FAILED, TIMEOUT, CANCELLED)
TASK_STATES = (HELD, BLOCKED, WAITING, RUNNING, DONE, FAILED, TIMEOUT, CANCELLED)
ACTIVE_STATES = (HELD, BLOCKED, WAITING, RUNNING)
ENDED_STATES = (DONE, FAILED, TIMEOUT, CANCELLED)
RETRYABLE_STATES = (FAILED, TIMEOUT, CANCELLED)

TASK_TRANSITIONS: dict[str, frozenset[str]] = {
    # Held until released: blocked while parents remain, else waiting.
    HELD: frozenset({BLOCKED, WAITING, CANCELLED}),
    # Waiting in the same transaction that records its last parent's end; cancelled when a
    # parent ends so that it can never run.
    BLOCKED: frozenset({WAITING, CANCELLED}),
    # Back to blocked when a retry finds parents still to end.
    WAITING: frozenset({RUNNING, CANCELLED, BLOCKED}),
    # Back to waiting when the hog drains, is lost, or a retry remains.
    RUNNING: frozenset({DONE, FAILED, TIMEOUT, CANCELLED, WAITING}),
    DONE: frozenset(),
    FAILED: frozenset({WAITING}),
    TIMEOUT: frozenset({WAITING}),
    # Blocked again when a retry of the parent that cancelled it re-arms it.
    CANCELLED: frozenset({WAITING, BLOCKED}),
}

HOG_PENDING = "pending"
HOG_RUNNING = "running"
HOG_FINISHED = "finished"
HOG_LOST = "lost"
HOG_CANCELLED = "cancelled"

HOG_STATES = (HOG_PENDING, HOG_RUNNING, HOG_FINISHED, HOG_LOST, HOG_CANCELLED)
HOG_LIVE_STATES = (HOG_PENDING, HOG_RUNNING)
HOG_ENDED_STATES = (HOG_FINISHED, HOG_LOST, HOG_CANCELLED)

HOG_TRANSITIONS: dict[str, frozenset[str]] = {
    HOG_PENDING: frozenset({HOG_RUNNING, HOG_LOST, HOG_CANCELLED, HOG_FINISHED}),
    HOG_RUNNING: frozenset({HOG_FINISHED, HOG_LOST, HOG_CANCELLED}),
    HOG_FINISHED: frozenset(),
    HOG_LOST: frozenset(),
    HOG_CANCELLED: frozenset(),
}

# Why an attempt ended.
REASON_EXITED = "exited"  # the process ended on its own (any exit code or signal)
REASON_TIMEOUT = "timeout"  # killed at its own time limit
REASON_CANCELLED = "cancelled"  # killed because a user cancelled it
REASON_RELEASED = "released"  # given back by its hog (drain, walltime, stop): not counted
REASON_LOST = "lost"  # its hog died or stopped beating: counted as a crash
REASON_START_FAILED = "start-failed"  # could not be started (bad cwd, no such program)


def can_move(transitions: dict[str, frozenset[str]], old: str, new: str) -> bool:
    return new in transitions.get(old, frozenset())


def sources(transitions: dict[str, frozenset[str]], new: str) -> tuple[str, ...]:
    """The states that may move to `new`."""
    return tuple(old for old, targets in transitions.items() if new in targets)
