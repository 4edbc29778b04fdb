"""The report's figures, gathered from the store into one JSON-ready dict (no click here).

Up to BARS_LIMIT attempts every attempt is a bar. Past that the timeline is aggregated: each hog's
row gives, per time bin, the share of its cores busy, and only the longest attempts (stragglers)
and the failed or lost ones are drawn one by one, up to limits the page states.
"""

import bisect
import heapq
import math
import time

from hog.store import history, profiles, states
from hog.store.db import Database

BARS_LIMIT = 20_000  # attempts drawn one by one; past that, bins
TIME_BINS = 400  # timeline and series bins across the run
STRAGGLERS = 100  # longest attempts drawn one by one when binned
MARKED_LIMIT = 2_000  # failed and lost attempts drawn one by one when binned
NAMES_SHOWN = 30
FAILURES_PER_NAME = 5
TAIL_CHARS = 1_000
HISTOGRAM_BINS = 30

# Outcome codes of a bar, as the page's script colours them.
OUTCOMES = ("done", "failed", "lost", "given back", "cancelled", "running")
_OUTCOME = {
    states.REASON_EXITED: 0,
    states.REASON_TIMEOUT: 1,
    states.REASON_START_FAILED: 1,
    states.REASON_LOST: 2,
    states.REASON_RELEASED: 3,
    states.REASON_CANCELLED: 4,
}


def gather(db: Database, selection: history.Selection, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    history.check(db, selection)
    with db.snapshot():
        hogs = history.hogs(db, selection, now)
        span = history.span(db, selection, [hog.id for hog in hogs], now)
        first = span.first if span.first is not None else now
        last = max(span.last if span.last is not None else now, first + 1.0)
        width = (last - first) / TIME_BINS
        notes: list[str] = []
        data = {
            "title": f"slurm-hog report: {db.path}",
            "selection": selection.describe(),
            "generated_at": now,
            "first": first,
            "last": last,
            "summary": _summary(db, selection, hogs, first, last, now, notes),
            "hogs": [_hog(hog, now) for hog in hogs],
            "timeline": _timeline(db, selection, hogs, first, width, now, notes),
            "series": _series(db, selection, first, width),
            "names": _names(db, selection, notes),
            "outcomes": OUTCOMES,
            "notes": notes,
        }
        data["failures"] = _failures(db, selection, data["names"], notes)
    return data


def _summary(
    db: Database,
    selection: history.Selection,
    hogs: list[history.HogSummary],
    first: float,
    last: float,
    now: float,
    notes: list[str],
) -> dict:
    held = sum(hog.cores * ((hog.ended_at or now) - hog.launched_at) for hog in hogs)
    busy = sum(hog.busy_core_s for hog in hogs)
    idle = {
        "startup": sum(hog.idle_startup_core_s for hog in hogs),
        "lock": sum(hog.idle_lock_core_s for hog in hogs),
        "empty": sum(hog.idle_empty_core_s for hog in hogs),
        "drain": sum(hog.idle_drain_core_s for hog in hogs),
    }
    idle["other"] = max(0.0, held - busy - sum(idle.values()))
    unsplit = sum(not hog.split_recorded for hog in hogs)
    if unsplit:
        notes.append(
            f"{unsplit} of {len(hogs)} hogs ran an older slurm-hog that did not record why its cores were"
            " idle: their idle time is counted under other."
        )
    hog_states: dict[str, int] = {}
    for hog in hogs:
        hog_states[hog.state] = hog_states.get(hog.state, 0) + 1
    outcomes = history.attempt_outcomes(db, selection, now)
    return {
        "tasks": history.task_states(db, selection),
        "attempts": {outcome: count for outcome, (count, _) in outcomes.items()},
        "attempt_core_s": {outcome: core_s for outcome, (_, core_s) in outcomes.items()},
        "cpu_s": history.cpu_seconds(db, selection),
        "wall_s": last - first,
        "hogs": len(hogs),
        "hog_states": hog_states,
        "held_core_s": held,
        "busy_core_s": busy,
        "efficiency": busy / held if held > 0 else None,
        "idle_core_s": idle,
    }


def _hog(hog: history.HogSummary, now: float) -> dict:
    end = hog.ended_at or now
    return {
        "id": hog.id,
        "state": hog.state,
        "host": hog.host,
        "cores": hog.cores,
        "launched": hog.launched_at,
        "ended": end,
        "heartbeat": hog.heartbeat_at,
        "end_reason": hog.end_reason,
        "held_core_s": hog.cores * (end - hog.launched_at),
        "busy_core_s": hog.busy_core_s,
        "lock_wait_s": hog.lock_wait_s,
        "attempts": hog.attempts,
    }


def _timeline(
    db: Database,
    selection: history.Selection,
    hogs: list[history.HogSummary],
    first: float,
    width: float,
    now: float,
    notes: list[str],
) -> dict:
    total = history.attempt_count(db, selection)
    each = total <= BARS_LIMIT
    row_of = {hog.id: index for index, hog in enumerate(hogs)}
    lanes: list[dict[str, int]] = [{} for _ in hogs]
    names: dict[str, int] = {}
    bars: dict[str, list] = {
        key: [] for key in ("row", "lane", "start", "length", "name", "outcome", "task", "attempt")
    }
    busy = [[0.0] * TIME_BINS for _ in hogs] if not each else []
    longest: list[tuple[float, int, history.AttemptRow]] = []
    marked: list[history.AttemptRow] = []
    marked_total = 0
    for order, row in enumerate(history.iter_attempts(db, selection)):
        index = row_of.get(row.hog_id)  # type: ignore[arg-type]
        if index is None or row.started_at is None:
            continue  # claimed, never started: no time on a core
        end = _bar_end(row, hogs[index], now)
        if each:
            _add_bar(bars, lanes[index], names, index, row, first, end)
            continue
        _spread(busy[index], row.cores, row.started_at - first, end - first, width)
        label = (row.cpu_labels or "?").split(",")[0]
        if label not in lanes[index]:
            lanes[index][label] = len(lanes[index])  # every CPU gets its lane, drawn or not
        item = (end - row.started_at, order, row)
        if len(longest) < STRAGGLERS:
            heapq.heappush(longest, item)
        elif item[0] > longest[0][0]:
            heapq.heapreplace(longest, item)
        if row.failed or row.reason == states.REASON_LOST:
            marked_total += 1
            if len(marked) < MARKED_LIMIT:
                marked.append(row)
    if not each:
        drawn = {(row.task_id, row.attempt) for row in marked}
        for _, _, row in sorted(longest, key=lambda item: item[1]):
            if (row.task_id, row.attempt) not in drawn:
                marked.append(row)
        for row in marked:
            end = _bar_end(row, hogs[row_of[row.hog_id]], now)  # type: ignore[index]
            _add_bar(bars, lanes[row_of[row.hog_id]], names, row_of[row.hog_id], row, first, end)  # type: ignore[index]
        notes.append(
            f"The timeline aggregates {total:,} attempts: each hog's row shows, in {TIME_BINS} time bins of"
            f" {width:.1f} s, the share of its cores that ran tasks. Drawn one by one on top: the"
            f" {min(STRAGGLERS, len(longest))} longest attempts and {min(marked_total, MARKED_LIMIT):,} of"
            f" {marked_total:,} failed or lost ones."
        )
    _sort_lanes(bars, lanes)
    return {
        "mode": "each" if each else "binned",
        "attempts": total,
        "bin_s": width,
        "lanes": [max(1, len(row_lanes)) for row_lanes in lanes],
        "lane_labels": [sorted(row_lanes, key=row_lanes.__getitem__) for row_lanes in lanes],
        "bar_names": sorted(names, key=names.__getitem__),
        "bars": bars,
        "busy": [
            [round(value / (hog.cores * width), 3) if hog.cores else 0 for value in row]
            for hog, row in zip(hogs, busy, strict=True)
        ]
        if busy
        else [],
    }


def _bar_end(row: history.AttemptRow, hog: history.HogSummary, now: float) -> float:
    """Where an attempt's bar ends: a lost hog's tasks are drawn up to its last heartbeat, when it
    was last known alive (the attempt's end is when it was declared lost)."""
    end = row.ended_at if row.ended_at is not None else now
    if row.reason == states.REASON_LOST and hog.heartbeat_at is not None and row.started_at is not None:
        return max(row.started_at, min(end, hog.heartbeat_at))
    return end


def _sort_lanes(bars: dict[str, list], lanes: list[dict[str, int]]) -> None:
    """Number each hog's lanes in the order of its CPUs (they were numbered as first seen)."""
    renumbered = []
    for row_lanes in lanes:
        ordered = sorted(row_lanes, key=lambda label: (len(label), label))  # "2" before "10"
        renumbered.append({row_lanes[label]: new for new, label in enumerate(ordered)})
        row_lanes.clear()
        row_lanes.update((label, new) for new, label in enumerate(ordered))
    bars["lane"] = [renumbered[row][lane] for row, lane in zip(bars["row"], bars["lane"], strict=True)]


def _add_bar(
    bars: dict[str, list],
    lanes: dict[str, int],
    names: dict[str, int],
    index: int,
    row,
    first: float,
    end: float,
) -> None:
    label = (row.cpu_labels or "?").split(",")[0]
    outcome = 1 if row.failed else _OUTCOME.get(row.reason, 0)
    if row.ended_at is None:
        outcome = 5
    bars["row"].append(index)
    bars["lane"].append(lanes.setdefault(label, len(lanes)))
    bars["start"].append(round(row.started_at - first, 3))
    bars["length"].append(round(end - row.started_at, 3))
    bars["name"].append(names.setdefault(row.name, len(names)))
    bars["outcome"].append(outcome)
    bars["task"].append(row.task_id)
    bars["attempt"].append(row.attempt)


def _spread(row: list[float], cores: int, start: float, end: float, width: float) -> None:
    """Add the core-seconds of [start, end) to the bins it covers."""
    first_bin = min(TIME_BINS - 1, max(0, int(start / width)))
    last_bin = min(TIME_BINS - 1, max(0, int(end / width)))
    if first_bin == last_bin:
        row[first_bin] += cores * (end - start)
        return
    for bin_index in range(first_bin, last_bin + 1):
        low = max(start, bin_index * width)
        high = min(end, (bin_index + 1) * width) if bin_index < last_bin else end
        row[bin_index] += cores * max(0.0, high - low)


def _series(db: Database, selection: history.Selection, first: float, width: float) -> dict:
    # The run's last moment falls just past the last bin: it counts in the last.
    counts = history.Binned(*(_folded(column) for column in history.binned(db, selection, first, width)))
    queued, running, done = [], [], []
    waiting = active = 0
    for index in range(TIME_BINS):
        waiting += (
            counts.submitted.get(index, 0)
            - counts.claimed.get(index, 0)
            + counts.requeued.get(index, 0)
            - counts.gone_unrun.get(index, 0)
        )
        active += counts.started.get(index, 0) - counts.ended.get(index, 0)
        queued.append(max(0, waiting))
        running.append(max(0, active))
        done.append(counts.done.get(index, 0))
    return {"bin_s": width, "queued": queued, "running": running, "done": done}


def _folded(counts: dict[int, int]) -> dict[int, int]:
    folded = {index: count for index, count in counts.items() if index < TIME_BINS}
    late = sum(count for index, count in counts.items() if index >= TIME_BINS)
    if late:
        folded[TIME_BINS - 1] = folded.get(TIME_BINS - 1, 0) + late
    return folded


def _names(db: Database, selection: history.Selection, notes: list[str]) -> list[dict]:
    found = profiles.profiles(db, selection)
    if len(found) > NAMES_SHOWN:
        notes.append(
            f"{len(found):,} task names: the {NAMES_SHOWN} with the most tasks are shown;"
            " `slurm-hog stats` lists them all."
        )
    return [_profile(profile) for profile in found[:NAMES_SHOWN]]


def _profile(profile: profiles.NameProfile) -> dict:
    return {
        "name": profile.name,
        "tasks": profile.tasks,
        "done": profile.done,
        "runs": profile.runs,
        "failed": profile.failed,
        "timeouts": profile.timeouts,
        "retries": profile.retries,
        "lost": profile.lost,
        "runtime": {str(p): profile.runtime(p) for p in (50, 95, 99, 100)},
        "peak": {str(p): profile.peak(p) for p in (95, 100)},
        "cpu_efficiency": profile.cpu_efficiency,
        "suggested_time_s": profile.suggested_time_s,
        "suggested_mem_bytes": profile.suggested_mem_bytes,
        "runtime_histogram": _histogram(profile.runtimes_s),
        "peak_histogram": _histogram(profile.peaks_bytes),
    }


def _histogram(ordered) -> dict | None:
    """Counts in HISTOGRAM_BINS bins spaced evenly on a log scale between the smallest positive
    value and the largest (values at or below zero go in the first)."""
    if not ordered:
        return None
    high = ordered[-1]
    low_index = bisect.bisect_right(ordered, 0.0)
    low = ordered[low_index] if low_index < len(ordered) else high
    if high <= 0:
        return {"edges": [0.0, 0.0], "counts": [len(ordered)]}
    low = min(low, high)
    ratio = (high / low) if low > 0 else 1.0
    steps = HISTOGRAM_BINS if ratio > 1.0 else 1
    edges = [low * math.pow(ratio, step / steps) for step in range(steps + 1)]
    edges[-1] = high
    cuts = [0] + [bisect.bisect_right(ordered, edge) for edge in edges[1:]]
    cuts[-1] = len(ordered)
    counts = [cuts[i + 1] - cuts[i] for i in range(steps)]
    return {"edges": [round(edge, 6) for edge in edges], "counts": counts}


def _failures(db: Database, selection: history.Selection, names: list[dict], notes: list[str]) -> list[dict]:
    rows, totals = history.failures(db, selection, FAILURES_PER_NAME)
    shown = [
        {
            "name": row.name,
            "task": row.task_id,
            "attempt": row.attempt,
            "host": row.host,
            "ended": row.ended_at,
            "why": _why(row),
            "tail": (row.stderr_tail or "")[-TAIL_CHARS:],
        }
        for row in rows
    ]
    total = sum(totals.values())
    if total > len(shown):
        notes.append(
            f"{total:,} failed attempts: the latest {FAILURES_PER_NAME} of each name are shown, with the"
            f" last {TAIL_CHARS:,} characters of their stderr; `slurm-hog show --state failed` lists the"
            " failed tasks."
        )
    return shown


def _why(row: history.Failure) -> str:
    if row.reason == states.REASON_TIMEOUT:
        return "timed out"
    if row.reason == states.REASON_START_FAILED:
        return "could not start"
    if row.signal is not None:
        return f"killed by signal {row.signal}"
    return f"exit {row.exit_code}"
