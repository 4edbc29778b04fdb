"""Dependencies between tasks: edges added at submit, released or cascaded when parents end,
re-armed by a retry, and the graph read back.

A child counts in `tasks.unmet` the edges whose parent's end has not been settled yet; settling
an edge (`dependencies.settled`) always takes one off, so a release costs one decrement per
child, never a count over its parents, and settling twice is impossible. A child is `blocked`
while that count is above 0, and becomes `waiting` in the transaction that settles its last edge.
An 'ok' edge whose parent ends other than done cancels the child and, through their own edges,
its descendants; a retry of that parent re-arms them.

Every function here runs inside the caller's write transaction: settling happens in the same
transaction that records the parents' ends.
"""

import time
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import apsw

from hog.errors import UsageError
from hog.store import states
from hog.store.counts import move_counts
from hog.store.db import Database
from hog.store.queue import chunks, placeholders

AFTER_OK = "ok"  # the parent must end done
AFTER_ANY = "any"  # the parent must end, however
# Parents after which an 'ok' child can never run (until a retry).
DOOMING_STATES = (states.FAILED, states.TIMEOUT, states.CANCELLED)
_WAITS_FOR_PARENTS = (states.BLOCKED, states.HELD)
_CHUNK = 500

_ENDED_AS = {states.FAILED: "failed", states.TIMEOUT: "timed out", states.CANCELLED: "was cancelled"}


# -- submitting ------------------------------------------------------------------------------


def resolve(
    connection: apsw.Connection, spec: Iterable[tuple[int | str, str]], db_path: str
) -> dict[int, str]:
    """Parent ids and their kinds from ids and names (a name: every task bearing it now).

    Unknown ids or names are refused; a parent named twice keeps the strictest kind ('ok').
    """
    parents: dict[int, str] = {}
    ids: dict[int, str] = {}
    for item, kind in spec:
        if isinstance(item, int):
            ids[item] = stricter(ids.get(item), kind)
            continue
        found = [
            task_id
            for (task_id,) in connection.execute(
                "SELECT t.id FROM submissions s JOIN tasks t ON t.submission_id = s.id WHERE s.name = ?",
                (item,),
            )
        ]
        if not found:
            raise UsageError(
                f"--after {item}: no task is named {item!r} in {db_path}; submit it first "
                "(a name stands for the tasks that bear it when the dependent is submitted)"
            )
        for task_id in found:
            parents[task_id] = stricter(parents.get(task_id), kind)
    known: set[int] = set()
    for chunk in chunks(sorted(ids), _CHUNK):
        known.update(
            task_id
            for (task_id,) in connection.execute(
                f"SELECT id FROM tasks WHERE id IN ({placeholders(chunk)})", tuple(chunk)
            )
        )
    missing = sorted(set(ids) - known)
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise UsageError(f"--after: no task {shown} in {db_path}; `slurm-hog show` lists them")
    for task_id, kind in ids.items():
        parents[task_id] = stricter(parents.get(task_id), kind)
    return parents


def stricter(old: str | None, new: str) -> str:
    return AFTER_OK if AFTER_OK in (old, new) else new


def unmet_parents(connection: apsw.Connection, parents: dict[int, str]) -> dict[int, bool]:
    """For each parent: whether its end is still to come (True) or already settles the edge.

    Refuses an 'ok' parent that already ended other than done: the child could never run.
    """
    result: dict[int, bool] = {}
    for chunk in chunks(sorted(parents), _CHUNK):
        for task_id, state in connection.execute(
            f"SELECT id, state FROM tasks WHERE id IN ({placeholders(chunk)})", tuple(chunk)
        ):
            if parents[task_id] == AFTER_OK and state in DOOMING_STATES:
                raise UsageError(
                    f"--after {task_id}: task {task_id} {_ENDED_AS[state]}, so a task after it could "
                    f"never run; `slurm-hog retry {task_id}` first, or use --after-any to run after it anyway"
                )
            result[task_id] = state not in states.ENDED_STATES
    return result


def add_edges(
    connection: apsw.Connection, children: Iterable[int], parents: dict[int, str], unmet: dict[int, bool]
) -> None:
    """Edges from each parent to each child; those whose parent has ended are settled already."""
    if not parents:
        return  # not even a walk over the children: an array of a million has none
    edges = [(parent, kind, 0 if unmet[parent] else 1) for parent, kind in parents.items()]

    def rows() -> Iterator[tuple]:
        for child in children:
            for parent, kind, settled in edges:
                if parent == child:
                    raise UsageError(f"task {child} cannot run after itself")
                yield child, parent, kind, settled

    connection.executemany("INSERT INTO dependencies(child, parent, kind, settled) VALUES (?,?,?,?)", rows())


# -- parents ending --------------------------------------------------------------------------


def settle(connection: apsw.Connection, task_ids: Iterable[int], now: float | None = None) -> None:
    """Apply the ends of these tasks (those that have ended) to their children, in the caller's
    transaction: release children whose last parent this was, cancel the ones that can never run
    and, through their edges, their descendants. Tasks that have not ended are skipped.
    """
    now = time.time() if now is None else now
    frontier = sorted(set(task_ids))
    cause: dict[int, str] = {}  # a task cancelled here -> the end that started the cascade
    root: dict[int, int] = {}
    ended = placeholders(states.ENDED_STATES)
    # CROSS JOIN: the edges lead (sqlite's way to fix the join's order). Left to itself, sqlite
    # walked every ended task through tasks_queue to find these few, in every hog write with
    # results: ~8 ms a write at 150,000 ended tasks, and growing with the queue's history.
    while frontier:
        edges: list[tuple] = []
        for chunk in chunks(frontier, _CHUNK):
            edges.extend(
                connection.execute(
                    "SELECT d.child, d.parent, d.kind, p.state FROM dependencies d"
                    " CROSS JOIN tasks p ON p.id = d.parent"
                    f" WHERE d.parent IN ({placeholders(chunk)}) AND d.settled = 0 AND p.state IN ({ended})",
                    (*chunk, *states.ENDED_STATES),
                )
            )
        if not edges:
            return
        connection.executemany(
            "UPDATE dependencies SET settled = 1 WHERE child = ? AND parent = ?",
            ((child, parent) for child, parent, _, _ in edges),
        )
        settled: dict[int, int] = {}  # child -> edges settled now
        doomed: dict[int, str] = {}  # child -> why it can never run
        for child, parent, kind, parent_state in edges:
            settled[child] = settled.get(child, 0) + 1
            if kind == AFTER_OK and parent_state != states.DONE and child not in doomed:
                root[child] = root.get(parent, parent)
                if parent in cause:
                    doomed[child] = f"parent {parent} was cancelled: {cause[parent]}"
                    cause[child] = cause[parent]
                else:
                    doomed[child] = f"parent {parent} {_ENDED_AS[parent_state]}"
                    cause[child] = f"task {parent} {_ENDED_AS[parent_state]}"
        frontier = _apply(connection, settled, doomed, root, now)


def _apply(
    connection: apsw.Connection,
    settled: dict[int, int],
    doomed: dict[int, str],
    root: dict[int, int],
    now: float,
) -> list[int]:
    """Take the settled edges off each child's count: release the blocked ones left with none,
    cancel the doomed ones still waiting for parents. Returns the ids cancelled."""
    counts: list[tuple[int, int]] = []
    released: list[tuple] = []
    cancelled: list[tuple] = []
    moved: dict[str, int] = {}
    for chunk in chunks(sorted(settled), _CHUNK):
        for child, state, unmet in connection.execute(
            f"SELECT id, state, unmet FROM tasks WHERE id IN ({placeholders(chunk)})", tuple(chunk)
        ):
            unmet -= settled[child]
            if child in doomed and state in _WAITS_FOR_PARENTS:
                cancelled.append((unmet, states.CANCELLED, now, root[child], doomed[child], child, state))
                moved[state] = moved.get(state, 0) + 1
            elif state == states.BLOCKED and unmet == 0:
                released.append((states.WAITING, child, states.BLOCKED))
            else:
                counts.append((unmet, child))
    connection.executemany("UPDATE tasks SET unmet = ? WHERE id = ?", counts)
    connection.executemany("UPDATE tasks SET unmet = 0, state = ? WHERE id = ? AND state = ?", released)
    move_counts(connection, states.BLOCKED, states.WAITING, len(released))
    connection.executemany(
        "UPDATE tasks SET unmet = ?, state = ?, ended_at = ?, cancelled_by = ?, reason = ?"
        " WHERE id = ? AND state = ?",
        cancelled,
    )
    for state, number in moved.items():
        move_counts(connection, state, states.CANCELLED, number)
    return [row[5] for row in cancelled]


# -- retry -----------------------------------------------------------------------------------


def rearm(connection: apsw.Connection, retried: Iterable[int]) -> None:
    """After a retry put these tasks back to waiting: they wait again for parents still to end,
    children still waiting for parents wait for their new end too, and the descendants their
    end cancelled go back to blocked (unless another parent still dooms them)."""
    retried = sorted(set(retried))
    if not retried:
        return
    # The retried tasks themselves: an explicit retry runs a task even after a parent that
    # doomed it, but parents still to end come first.
    _block_waiting(connection, retried)
    _unsettle(connection, retried, _WAITS_FOR_PARENTS)
    rearmed = set(retried)
    candidates: list[int] = []
    for chunk in chunks(retried, _CHUNK):
        candidates.extend(
            task_id
            for (task_id,) in connection.execute(
                f"SELECT id FROM tasks WHERE cancelled_by IN ({placeholders(chunk)}) AND state = ?",
                (*chunk, states.CANCELLED),
            )
        )
    # Parents have smaller ids than their children: in id order, a task's parents are settled first.
    for task_id in sorted(candidates):
        edges = connection.execute(
            "SELECT d.parent, d.kind, p.state FROM dependencies d JOIN tasks p ON p.id = d.parent"
            " WHERE d.child = ?",
            (task_id,),
        ).fetchall()
        dooming = [
            (parent, state)
            for parent, kind, state in edges
            if kind == AFTER_OK and state in DOOMING_STATES and parent not in rearmed
        ]
        if dooming:
            parent, state = dooming[0]
            connection.execute(
                "UPDATE tasks SET cancelled_by = ?, reason = ? WHERE id = ?",
                (parent, f"parent {parent} {_ENDED_AS[state]}", task_id),
            )
            continue
        again = [parent for parent, _, _ in edges if parent in rearmed]
        connection.executemany(
            "UPDATE dependencies SET settled = 0 WHERE child = ? AND parent = ? AND settled = 1",
            ((task_id, parent) for parent in again),
        )
        unmet = connection.execute(
            "SELECT count(*) FROM dependencies WHERE child = ? AND settled = 0", (task_id,)
        ).fetchall()[0][0]
        new_state = states.BLOCKED if unmet else states.WAITING
        connection.execute(
            "UPDATE tasks SET state = ?, unmet = ?, ended_at = NULL, cancelled_by = NULL, reason = NULL"
            " WHERE id = ? AND state = ?",
            (new_state, unmet, task_id, states.CANCELLED),
        )
        move_counts(connection, states.CANCELLED, new_state)
        rearmed.add(task_id)


def _block_waiting(connection: apsw.Connection, task_ids: list[int]) -> None:
    blocked = 0
    for chunk in chunks(task_ids, _CHUNK):
        connection.execute(
            f"UPDATE tasks SET state = ? WHERE id IN ({placeholders(chunk)}) AND state = ? AND unmet > 0",
            (states.BLOCKED, *chunk, states.WAITING),
        )
        blocked += connection.changes()
    move_counts(connection, states.WAITING, states.BLOCKED, blocked)


def _unsettle(connection: apsw.Connection, parents: list[int], child_states: tuple[str, ...]) -> None:
    """Children in `child_states` wait again for these parents, whose end was settled before."""
    marks = placeholders(child_states)
    for chunk in chunks(parents, _CHUNK):  # the edges lead, as in settle
        edges = connection.execute(
            "SELECT d.child, d.parent FROM dependencies d CROSS JOIN tasks c ON c.id = d.child"
            f" WHERE d.parent IN ({placeholders(chunk)}) AND d.settled = 1 AND c.state IN ({marks})",
            (*chunk, *child_states),
        ).fetchall()
        connection.executemany("UPDATE dependencies SET settled = 0 WHERE child = ? AND parent = ?", edges)
        connection.executemany("UPDATE tasks SET unmet = unmet + 1 WHERE id = ?", ((c,) for c, _ in edges))
        # A held child stays held; a blocked one stays blocked with one more parent to wait for.


# -- reading the graph -----------------------------------------------------------------------


class Edge(NamedTuple):
    child: int
    parent: int
    kind: str
    settled: bool


def related(db: Database, task_id: int, downstream: bool) -> list[int]:
    """Every task after `task_id` (downstream) or before it (upstream), ids in order."""
    near, far = ("child", "parent") if downstream else ("parent", "child")
    rows = db.query(
        f"WITH RECURSIVE linked(id) AS (SELECT {near} FROM dependencies WHERE {far} = ?"
        f" UNION SELECT d.{near} FROM dependencies d JOIN linked l ON d.{far} = l.id)"
        " SELECT id FROM linked ORDER BY id",
        (task_id,),
    )
    return [row[0] for row in rows]


def edges_among(db: Database, task_ids: list[int]) -> list[Edge]:
    """The edges whose child is one of these tasks."""
    result: list[Edge] = []
    for chunk in chunks(sorted(set(task_ids)), _CHUNK):
        result.extend(
            Edge(child, parent, kind, bool(settled))
            for child, parent, kind, settled in db.query(
                "SELECT child, parent, kind, settled FROM dependencies"
                f" WHERE child IN ({placeholders(chunk)}) ORDER BY child, parent",
                tuple(chunk),
            )
        )
    return result
