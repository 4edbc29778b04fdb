"""stats: per-name figures and suggested requests from a real run with known runtimes and memory."""

import csv
import hashlib
import io
import signal
import sys
from pathlib import Path

import pytest
from helpers import cli, cli_json, start_hog

from hog.suggest import (
    percentile,
    slurm_mem,
    slurm_time,
    suggested_mem_bytes,
    suggested_time_s,
)
from hog.timeutil import parse_duration, parse_size

MIB = 1 << 20
# Holds 150 MiB for a moment: its peak is 150 MiB plus the interpreter's ~10.
ALLOCATE = f"{sys.executable} -c 'import time; block = bytearray(150 << 20); time.sleep(0.3)'"
BUSY = (
    f"{sys.executable} -c 'import time; end = time.process_time() + 1.0\n"
    "while time.process_time() < end: pass'"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stats")
    db = folder / "queue.sqlite"
    assert cli(db, "init").returncode == 0

    def submit(*args: str) -> None:
        result = cli(db, "submit", *args)
        assert result.returncode == 0, result.stderr

    assert cli(db, "kind", "set", "quick", "--time", "5m").returncode == 0
    for _ in range(4):
        submit("--kind", "quick", "--name", "nap", "sleep 0.5")
    submit("--name", "memory", ALLOCATE)
    submit("--name", "memory", ALLOCATE)
    submit("--name", "spin", BUSY)
    # Fails once (no marker yet), then succeeds on its retry.
    marker = folder / "marker"
    submit("--name", "flaky", "--retries", "1", f"test -e {marker} || {{ touch {marker}; exit 1; }}")
    submit("--name", "slow", "--time", "1s", "sleep 30")
    hog = start_hog(db, "--cores", "2", "--idle-timeout", "1m")
    assert cli(db, "wait", "--max-wait", "2m", timeout=180).returncode == 1  # slow timed out
    hog.send_signal(signal.SIGINT)
    assert hog.wait(timeout=60) == 0
    return db


def by_name(db: Path, *args: str) -> dict[str, dict]:
    return {row["name"]: row for row in cli_json(db, "stats", *args)}  # type: ignore[union-attr]


def test_known_runtimes_and_peaks_give_their_percentiles_and_suggestions(run: Path) -> None:
    rows = by_name(run)
    assert set(rows) == {"nap", "memory", "spin", "flaky", "slow"}
    nap = rows["nap"]
    assert (nap["tasks"], nap["done"], nap["runs"], nap["failed"], nap["retries"]) == (4, 4, 4, 0, 0)
    assert 0.5 <= nap["runtime_p50_s"] <= nap["runtime_p95_s"] <= nap["runtime_max_s"] < 2.5
    assert nap["suggested_time"] == "1:00"  # 0.5 s x 1.5 rounds up to SLURM's least, a minute
    assert nap["cpu_efficiency"] < 0.2  # sleeping
    memory = rows["memory"]
    assert 150 * MIB <= memory["mem_p95_bytes"] <= memory["mem_max_bytes"] < 200 * MIB
    # p99 x 1.5 is 225-300 MiB: the next power of two MiB.
    assert memory["suggested_mem"] == "256M" and parse_size(memory["suggested_mem"]) == 256 * MIB
    # A second of CPU against a sleep's nothing, however busy the machine is meanwhile.
    assert rows["spin"]["cpu_efficiency"] > 10 * nap["cpu_efficiency"]
    flaky = rows["flaky"]
    assert (flaky["tasks"], flaky["done"], flaky["runs"]) == (1, 1, 2)
    assert (flaky["failed"], flaky["retries"]) == (1, 1)
    slow = rows["slow"]
    assert (slow["done"], slow["runs"], slow["timeouts"], slow["failed"]) == (0, 1, 1, 1)
    assert 1.0 <= slow["runtime_max_s"] < 10  # killed at its limit
    for row in rows.values():
        assert parse_duration(row["suggested_time"]) >= 60


def test_table_and_csv_say_the_same(run: Path) -> None:
    table = cli(run, "stats")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "tasks", "done"]
    assert any(line.startswith("memory") and "256M" in line for line in lines)
    result = cli(run, "stats", "--format", "csv")
    assert result.returncode == 0
    rows = {row["name"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert rows["memory"]["suggested_mem"] == "256M" and rows["nap"]["tasks"] == "4"


def test_a_name_or_a_kind_selects_its_tasks(run: Path) -> None:
    assert list(by_name(run, "--name", "nap")) == ["nap"]
    assert list(by_name(run, "--kind", "quick")) == ["nap"]
    assert by_name(run, "--since", "1s") == {}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--name", "nosuch"), "no task has the name 'nosuch'"),
        (("--bundle", "nosuch"), "no task has the bundle 'nosuch'"),
        (("--kind", "nosuch"), "no task has the kind 'nosuch'"),
        (("--since", "soon"), "bad --since 'soon'"),
        (("--format", "xml"), "Invalid value for '--format'"),
    ],
)
def test_bad_input_is_a_usage_error(run: Path, args: tuple, words: str) -> None:
    before = hashlib.sha256(run.read_bytes()).hexdigest()
    result = cli(run, "stats", *args)
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr
    assert hashlib.sha256(run.read_bytes()).hexdigest() == before


@pytest.mark.parametrize(
    ("runtimes", "expected"),
    [
        ([0.1], "1:00"),
        ([30.0], "1:00"),  # 45 s
        ([41.0], "2:00"),  # 61.5 s
        ([200.0], "5:00"),
        ([1000.0], "30:00"),  # 25 min
        ([3000.0], "1:30:00"),  # 75 min
        ([5000.0], "3:00:00"),  # 2.1 h
        ([20000.0], "12:00:00"),  # 8.3 h
        ([40000.0], "1-00:00:00"),  # 16.7 h
        ([100000.0], "2-00:00:00"),  # 41.7 h
    ],
)
def test_time_suggestions_round_up_to_slurm_values(runtimes: list[float], expected: str) -> None:
    suggested = suggested_time_s(runtimes)
    assert suggested is not None and slurm_time(suggested) == expected
    assert parse_duration(expected) == suggested >= runtimes[-1] * 1.5


@pytest.mark.parametrize(
    ("peak", "expected"),
    [(1 * MIB, "64M"), (50 * MIB, "128M"), (400 * MIB, "1G"), (700 * MIB, "2G"), (3000 * MIB, "5G")],
)
def test_memory_suggestions_round_up_to_slurm_values(peak: int, expected: str) -> None:
    suggested = suggested_mem_bytes([peak])
    assert suggested is not None and slurm_mem(suggested) == expected
    assert parse_size(expected) == suggested >= peak * 1.5


def test_the_percentile_is_the_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 99) == 99 and percentile(values, 50) == 50 and percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0 and percentile([], 99) is None
    # One slow run among many does not move p99 past the others...
    assert suggested_time_s([10.0] * 199 + [10_000.0]) == 60
    # ...but two in a hundred do.
    assert suggested_time_s([10.0] * 98 + [10_000.0] * 2) == 21_600
