"""Pure functions: durations, sizes, id lists, packing, the transition tables, output patterns."""

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hog.errors import UsageError
from hog.ids import parse_ids
from hog.pilot.outputs import check_pattern
from hog.store import states
from hog.store.packing import Busy, Candidate, Resources, choose, reservation_start
from hog.timeutil import format_duration, parse_duration, parse_size

GIB = 1 << 30
MIB = 1 << 20

# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10", 600),  # M
        ("10:30", 630),  # M:S
        ("1:02:03", 3723),  # H:M:S
        ("2-3", 2 * 86400 + 3 * 3600),  # D-H
        ("2-3:04", 2 * 86400 + 3 * 3600 + 4 * 60),  # D-H:M
        ("2-3:04:05", 2 * 86400 + 3 * 3600 + 4 * 60 + 5),  # D-H:M:S
        ("1-00:00:00", 86400),
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86400),
        ("1.5h", 5400),
        (" 15M ", 900),
        ("0:30", 30),
    ],
)
def test_parse_duration_accepts_slurm_and_suffixed_forms(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "abc",
        "1:2:3:4",
        "-5",
        "5x",
        "1-",
        "-1-2",
        "1.5",
        "1:",
        ":30",
        "1-2-3",
        "h",
        "nan",
        "inf",
        "1e3s",
        "0",
        "0s",
        "0:00",
        "99999999999d",
    ],
)
def test_parse_duration_refuses_bad_forms_with_a_usage_error(text):
    with pytest.raises(UsageError) as error:
        parse_duration(text, what="--time")
    assert "--time" in str(error.value)


def test_parse_duration_zero_only_when_allowed():
    assert parse_duration("0", allow_zero=True) == 0
    with pytest.raises(UsageError, match="longer than zero"):
        parse_duration("0s")


def test_parse_duration_error_lists_the_accepted_forms():
    with pytest.raises(UsageError) as error:
        parse_duration("soon")
    assert "H:M:S" in str(error.value) and "15m" in str(error.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (5, "5.0s"), (42, "42s"), (185, "3m05s"), (7800, "2h10m"), (100800, "1d04h")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# -- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("500M", 500 * MIB),
        ("4G", 4 * GIB),
        ("4g", 4 * GIB),
        ("4GB", 4 * GIB),
        ("4GiB", 4 * GIB),
        ("1.5G", int(1.5 * GIB)),
        ("100K", 100 * 1024),
        ("2T", 2 << 40),
        ("512", 512 * MIB),  # a bare number is MiB, as SLURM's --mem
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "0", "0G", "-1G", "4X", "G", "4 G B", "2000000T"])
def test_parse_size_refuses_bad_sizes(text):
    with pytest.raises(UsageError) as error:
        parse_size(text, what="--mem")
    assert "--mem" in str(error.value)


# -- id lists --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "ids"),
    [
        (["7"], [7]),
        (["3-9"], [3, 4, 5, 6, 7, 8, 9]),
        (["1,4,10-12"], [1, 4, 10, 11, 12]),
        (["5", "1-3"], [5, 1, 2, 3]),  # the order given
        (["2", "1-3", "2"], [2, 1, 3]),  # no repeats
        (["1,,2,"], [1, 2]),
        ([], []),
    ],
)
def test_parse_ids(words, ids):
    assert parse_ids(words) == ids


@pytest.mark.parametrize("word", ["x", "0", "-3", "5-3", "1-2-3", "1.5", "one", "3-", "1-99999999999", "7a"])
def test_parse_ids_names_the_bad_word(word):
    with pytest.raises(UsageError) as error:
        parse_ids(["1", word])
    assert "bad task id" in str(error.value)


# -- arbitrary text never escapes as anything but UsageError --------------------------------

_NASTY = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from("0123456789:-.smhdkgtKMGTiB \0\u0660\u0967"), max_size=40),
    st.text(alphabet="0123456789", min_size=1, max_size=5000),
    st.builds(
        lambda digits, tail: "9" * digits + tail,
        st.integers(300, 5000),
        st.sampled_from(["", "s", "m", "G", ":1", "-1", "K"]),
    ),
)


def _only_usage_errors(function, text):
    with contextlib.suppress(UsageError):
        function(text)


@settings(max_examples=150, deadline=None)
@given(_NASTY)
def test_parse_duration_raises_only_usage_errors(text):
    _only_usage_errors(parse_duration, text)


@settings(max_examples=150, deadline=None)
@given(_NASTY)
def test_parse_size_raises_only_usage_errors(text):
    _only_usage_errors(parse_size, text)


@settings(max_examples=150, deadline=None)
@given(st.lists(_NASTY, max_size=4))
def test_parse_ids_raises_only_usage_errors(words):
    try:
        ids = parse_ids(words)
    except UsageError:
        return
    assert all(task_id >= 1 for task_id in ids)
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("text", ["9" * 400, "9" * 400 + "G"])
def test_parse_size_huge_number_is_a_usage_error(text):
    # float('9' * 400) is inf, and int(inf) raises OverflowError.
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize("text", ["9" * 5000, "1-" + "9" * 5000, "9" * 5000 + ":00"])
def test_parse_duration_huge_number_is_a_usage_error(text):
    # int() of more than 4300 digits raises ValueError on Python >= 3.11.
    with pytest.raises(UsageError):
        parse_duration(text)


# -- packing ---------------------------------------------------------------------------------


def _task(key, cores, limit=None, gpus=0, mem=0):
    return Candidate(key, Resources(cores, gpus, mem), limit)


def test_choose_takes_candidates_in_the_order_given_while_they_fit():
    candidates = [_task("a", 2), _task("b", 1), _task("c", 1), _task("d", 1)]
    chosen = choose(candidates, Resources(4, 0, 0), [], now=0)
    assert [c.key for c in chosen] == ["a", "b", "c"]


def test_choose_respects_gpus_and_memory():
    candidates = [
        _task("gpu", 1, gpus=1),
        _task("gpu2", 1, gpus=1),
        _task("mem", 1, mem=8 * GIB),
        _task("small", 1, mem=1 * GIB),
    ]
    free = Resources(8, 1, 4 * GIB)
    chosen = choose(candidates, free, [], now=0)
    # gpu fits; gpu2 would need a second GPU: it reserves, and without time limits on anything
    # nothing behind it is backfilled.
    assert [c.key for c in chosen] == ["gpu"]


def test_choose_stops_when_no_cores_are_left():
    candidates = [_task(i, 1) for i in range(10)]
    assert len(choose(candidates, Resources(3, 0, 0), [], now=0)) == 3


def test_big_task_reserves_and_only_tasks_ending_before_the_reservation_backfill():
    now = 1000.0
    # A 4-core hog: 2 cores busy until now+100, 2 free. The big task needs all 4.
    busy = [Busy(Resources(2, 0, 0), now + 100)]
    candidates = [
        _task("big", 4, limit=3600),
        _task("short", 1, limit=50),  # ends at now+50 <= now+100: backfills
        _task("long", 1, limit=200),  # would delay the big task
        _task("unlimited", 1, limit=None),  # end unknown: never backfills
        _task("short2", 1, limit=100),  # ends exactly when the reservation starts: backfills
    ]
    chosen = choose(candidates, Resources(2, 0, 0), busy, now)
    assert [c.key for c in chosen] == ["short", "short2"]


def test_big_task_without_known_end_of_running_tasks_blocks_everything_behind_it():
    busy = [Busy(Resources(2, 0, 0), None)]
    candidates = [_task("big", 4), _task("small", 1, limit=1)]
    assert choose(candidates, Resources(2, 0, 0), busy, now=0) == []


def test_tasks_ranked_before_the_big_one_still_start():
    busy = [Busy(Resources(1, 0, 0), 100.0)]
    candidates = [_task("first", 1, limit=500), _task("big", 4), _task("small", 1, limit=10)]
    chosen = choose(candidates, Resources(3, 0, 0), busy, now=0)
    # "first" runs until 500, so the big task can start only at 500; "small" ends by then.
    assert [c.key for c in chosen] == ["first", "small"]


def test_reservation_start():
    needs = Resources(4, 0, 0)
    free = Resources(1, 0, 0)
    busy = [Busy(Resources(2, 0, 0), 10.0), Busy(Resources(1, 0, 0), 5.0)]
    assert reservation_start(needs, free, busy) == 10.0  # sorted by end: 2 at 5, 4 at 10
    assert reservation_start(Resources(2, 0, 0), free, busy) == 5.0
    # A task whose end is unknown is counted last: it matters only if the others are not enough.
    assert reservation_start(needs, free, [Busy(Resources(1, 0, 0), None), *busy]) == 10.0
    assert (
        reservation_start(needs, free, [Busy(Resources(1, 0, 0), 5.0), Busy(Resources(2, 0, 0), None)])
        is None
    )
    assert reservation_start(Resources(8, 0, 0), free, busy) is None  # never fits
    assert (
        reservation_start(needs, free, [Busy(Resources(3, 0, 0), 7.0), Busy(Resources(1, 0, 0), None)]) == 7.0
    )


# -- transition tables -----------------------------------------------------------------------


def test_every_task_state_has_an_entry_and_only_known_targets():
    assert set(states.TASK_TRANSITIONS) == set(states.TASK_STATES)
    for targets in states.TASK_TRANSITIONS.values():
        assert targets <= set(states.TASK_STATES)
    assert set(states.HOG_TRANSITIONS) == set(states.HOG_STATES)


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        ("waiting", "running", True),
        ("waiting", "cancelled", True),
        ("waiting", "done", False),
        ("waiting", "failed", False),
        ("running", "done", True),
        ("running", "failed", True),
        ("running", "timeout", True),
        ("running", "cancelled", True),
        ("running", "waiting", True),  # drained, lost, or a retry remains
        ("done", "waiting", False),
        ("done", "running", False),
        ("failed", "waiting", True),
        ("timeout", "waiting", True),
        ("cancelled", "waiting", True),
        ("failed", "running", False),
        ("cancelled", "done", False),
        ("waiting", "waiting", False),
        ("nonsense", "waiting", False),
    ],
)
def test_task_transitions(old, new, allowed):
    assert states.can_move(states.TASK_TRANSITIONS, old, new) is allowed


def test_hog_transitions():
    table = states.HOG_TRANSITIONS
    assert states.can_move(table, "pending", "running")
    assert states.can_move(table, "running", "lost")
    assert states.can_move(table, "running", "finished")
    assert not states.can_move(table, "running", "pending")
    for ended in ("finished", "lost", "cancelled"):
        assert table[ended] == frozenset()


def test_retryable_states_are_the_ones_that_may_go_back_to_waiting():
    for state in states.RETRYABLE_STATES:
        assert states.can_move(states.TASK_TRANSITIONS, state, states.WAITING)
    assert set(states.ENDED_STATES) | set(states.ACTIVE_STATES) == set(states.TASK_STATES)


# -- output patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["out.txt", "logs/{id}.out", "{name}-{id}.{attempt}.err", "{{literal}}-{id}", "{id:06d}.out"],
)
def test_check_pattern_accepts_known_placeholders(pattern):
    assert check_pattern(pattern, "--stdout") == pattern


@pytest.mark.parametrize(
    ("pattern", "phrase"),
    [
        ("{jobid}.out", "unknown placeholder {jobid}"),
        ("{}.out", "unknown placeholder"),
        ("{0}.out", "unknown placeholder"),
        ("{id", "brace"),
        ("id}", "brace"),
        ("a\0b", "NUL"),
    ],
)
def test_check_pattern_refuses_bad_patterns(pattern, phrase):
    with pytest.raises(UsageError) as error:
        check_pattern(pattern, "--stderr")
    assert phrase in str(error.value)
    assert "--stderr" in str(error.value)


# The grammar the help documents, as regular expressions: the parsers are written by hand (re is
# kept off slurm-hog-shell's start) and must accept exactly these.
_SUFFIXED = r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)([smhd])"
_SLURM = r"(?:([0-9]+)-)?([0-9]+)(?::([0-9]+))?(?::([0-9]+))?"
_SIZE = r"(?i)([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?"


def _documented_duration(text: str) -> float | None:
    import re

    value = text.strip().lower()
    if match := re.fullmatch(_SUFFIXED, value):
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    elif match := re.fullmatch(_SLURM, value):
        days, first, second, third = (int(part) if part else None for part in match.groups())
        if days is not None:
            seconds = days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
        elif third is not None:
            seconds = first * 3600 + second * 60 + third
        else:
            seconds = first * 60 + (second or 0) if second is not None else first * 60
    else:
        return None
    return seconds if 0 < seconds <= 100 * 365 * 86400 and len(value) <= 40 else None


def _documented_size(text: str) -> int | None:
    import re

    match = re.fullmatch(_SIZE, text.strip()) if len(text) <= 40 else None
    if not match:
        return None
    size = int(
        float(match.group(1)) * {"": MIB, "k": 1024, "m": MIB, "g": GIB, "t": 1 << 40}[match.group(2).lower()]
    )
    return size if 0 < size <= 1 << 60 else None


def _or_none(parse, text: str):
    with contextlib.suppress(UsageError):
        return parse(text)
    return None


@settings(max_examples=3000)
@given(st.text(alphabet="0123456789.:-smhdSMHD kgtibKGTIB\t", max_size=12))
def test_durations_and_sizes_are_parsed_as_the_help_documents(text: str) -> None:
    assert _or_none(parse_duration, text) == _documented_duration(text)
    assert _or_none(parse_size, text) == _documented_size(text)
