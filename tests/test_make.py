"""Real make (Debian's GNU make) with SHELL=slurm-hog-shell and real hogs: every recipe is a task."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import child_env, cli_json, tasks, wait_until
from test_slurm import monitor, slurm_env  # noqa: F401  (slurm_env: the SLURM tests' fixture)

SHELL = Path(sys.executable).with_name("slurm-hog-shell")
# Skipped without make, except in CI, where the missing tool fails the tests that need it.
pytestmark = pytest.mark.skipif(
    shutil.which("make") is None and os.environ.get("CI") != "true",
    reason="needs GNU make (scripts/test.sh installs Debian's make)",
)


def makefile(folder: Path, body: str, shell: Path | str = SHELL) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "Makefile").write_text(f"SHELL := {shell}\n" + body.lstrip("\n"))


def make(folder: Path, db: Path | str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env=child_env(SLURM_HOG_DB=str(db), **extra),
        timeout=120,
    )


def build(tmp_path: Path, db: Path | str, body: str, *args: str) -> tuple[Path, subprocess.CompletedProcess]:
    """Write a Makefile with SHELL=slurm-hog-shell in a folder of its own and run make there."""
    folder = tmp_path / "build"
    makefile(folder, body)
    return folder, make(folder, db, *args)


def states(db: Path) -> list[str]:
    return [task["state"] for task in tasks(db)]


DAG = """
N := 1 2 3 4
all: final.txt
leaf%.txt:
\techo leaf $* > $@
mid%.txt: leaf%.txt
\tcat $< > $@; echo mid $* on $$HOSTNAME >> $@
final.txt: $(foreach n,$(N),mid$(n).txt)
\tcat $^ > $@
\techo built final
"""


@pytest.mark.usefixtures("hog")
def test_a_dag_of_targets_is_built_by_the_hogs(db: Path, tmp_path: Path) -> None:
    folder, result = build(tmp_path, db, DAG, "-j4")
    assert result.returncode == 0, result.stderr
    lines = (folder / "final.txt").read_text().splitlines()
    host = os.uname().nodename
    assert lines == [line for n in range(1, 5) for line in (f"leaf {n}", f"mid {n} on {host}")]
    assert "built final" in result.stdout
    # Nine recipes, ten lines (final has two): every line ran as a task, and each is done.
    assert states(db) == ["done"] * 10
    assert {task["host"] for task in tasks(db)} == {host}


@pytest.mark.usefixtures("hog")
def test_a_failing_recipe_stops_the_build_and_keep_going_builds_the_rest(db: Path, tmp_path: Path) -> None:
    folder, result = build(tmp_path, db, "all: first bad last\nfirst last:\n\ttouch $@\nbad:\n\texit 7\n")
    assert result.returncode == 2
    assert "[Makefile:6: bad] Error 7" in result.stderr
    assert (folder / "first").exists() and not (folder / "last").exists()
    result = make(folder, db, "-k")
    assert result.returncode == 2
    assert "[Makefile:6: bad] Error 7" in result.stderr
    assert (folder / "last").exists()


@pytest.mark.usefixtures("hog")
def test_output_reaches_makes_console_and_output_sync_groups_it(db: Path, tmp_path: Path) -> None:
    recipe = "\t@echo $@ one; echo $@ warns >&2; sleep 0.5; echo $@ two\n"
    _, result = build(tmp_path, db, f"all: a b\na b:\n{recipe}", "-j2", "-O")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    for target in ("a", "b"):
        first = out.index(f"{target} one")
        assert out[first + 1] == f"{target} two"  # grouped: nothing of the other target between
        assert f"{target} warns" in result.stderr.splitlines()


@pytest.mark.usefixtures("hog")
def test_a_recipe_killed_by_a_signal_reports_128_plus_its_number(db: Path, tmp_path: Path) -> None:
    _, result = build(tmp_path, db, "all:\n\tkill -9 $$$$\n")
    assert result.returncode == 2
    assert "Error 137" in result.stderr
    (task,) = tasks(db)
    assert task["state"] == "failed" and task["signal"] == 9


@pytest.mark.usefixtures("hog")
def test_ctrl_c_mid_build_cancels_every_recipe_and_leaves_nothing_running(db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "interrupt"
    pids = tmp_path / "pids"
    pids.mkdir()
    makefile(folder, f"all: a b c d\na b c d:\n\techo $$$$ > {pids}/$@; sleep 60; touch $@\n")
    build = subprocess.Popen(
        ["make", "-j4"],
        cwd=folder,
        env=child_env(SLURM_HOG_DB=str(db)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    # Two run (the hog has two cores), two wait: Ctrl-C reaches make and its shells, as a terminal's.
    wait_until(lambda: len(list(pids.iterdir())) == 2, message="two recipes running")
    wait_until(lambda: len(tasks(db)) == 4, message="four tasks submitted")
    os.killpg(build.pid, signal.SIGINT)
    _, stderr = build.communicate(timeout=60)
    assert build.returncode != 0
    assert stderr.count("Interrupt") == 4, stderr
    assert sorted(set(states(db))) == ["cancelled"]
    for pid_file in pids.iterdir():
        pid = int(pid_file.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any((folder / target).exists() for target in "abcd")


@pytest.mark.usefixtures("hog")
def test_oneshell_runs_the_whole_recipe_as_one_task(db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "oneshell"
    body = """
.ONESHELL:
all:
\t@x=first
\t@cd sub
\t-echo "x is $$x in $$(basename $$(pwd))" > ../out.txt
\tfor i in 1 2; do \\
\t  echo item $$i; \\
\tdone >> ../out.txt
"""
    makefile(folder, body)
    (folder / "sub").mkdir()
    result = make(folder, db)
    assert result.returncode == 0, result.stderr
    assert (folder / "out.txt").read_text().splitlines() == ["x is first in sub", "item 1", "item 2"]
    assert len(tasks(db)) == 1


@pytest.mark.usefixtures("hog")
def test_dollar_variables_continuations_and_make_n(db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "vars"
    body = """
export GREETING := hello from make
list.txt:
\tfor i in 1 2 3; do \\
\t  echo "$$GREETING $$i"; \\
\tdone > $@
"""
    makefile(folder, body)
    result = make(folder, db, "-n")
    assert result.returncode == 0 and "for i in 1 2 3" in result.stdout
    assert tasks(db) == []  # -n prints the recipes and runs nothing
    result = make(folder, db)
    assert result.returncode == 0, result.stderr
    assert (folder / "list.txt").read_text().splitlines() == [f"hello from make {i}" for i in (1, 2, 3)]


@pytest.mark.usefixtures("hog")
def test_resources_per_rule_reach_the_task(db: Path, tmp_path: Path) -> None:
    report = "\techo $$HOG_CORES $$(grep Cpus_allowed_list /proc/self/status | cut -f2) > $@\n"
    body = f"""
all: one flags exported
one:
{report}
flags: .SHELLFLAGS := --cores 2 --time 10m -c
flags:
{report}
exported: export SLURM_HOG_CORES := 2
exported:
{report}
"""
    folder, result = build(tmp_path, db, body)
    assert result.returncode == 0, result.stderr
    cores, cpus = (folder / "one").read_text().split()
    assert cores == "1" and cpus.isdigit()
    for target in ("flags", "exported"):
        cores, cpus = (folder / target).read_text().split()
        assert cores == "2" and ("-" in cpus or "," in cpus), (target, cpus)
    assert [task["cores"] for task in tasks(db)] == [1, 2, 2]


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.usefixtures("hog")
def test_a_recipe_sh_cannot_parse_fails_as_it_would_locally(db: Path, tmp_path: Path) -> None:
    _, result = build(tmp_path, db, "all:\n\techo (\n")
    assert result.returncode == 2
    assert "Syntax error" in result.stderr and "Error 2" in result.stderr


@pytest.mark.parametrize("queue", ["missing", "empty"])
def test_a_queue_that_is_missing_or_not_made_fails_every_recipe_at_once(tmp_path: Path, queue: str) -> None:
    folder = tmp_path / "noqueue"
    makefile(folder, "all: a b c\na b c:\n\ttouch $@\n")
    db = tmp_path / "queue.sqlite"
    if queue == "empty":
        db.write_bytes(b"")
    result = make(folder, db, "-j3", "-k")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("slurm-hog-shell: error:")]
    assert len(errors) == 3, result.stderr
    assert all(("no queue database" if queue == "missing" else "not a slurm-hog queue") in e for e in errors)
    assert not any((folder / target).exists() for target in "abc")


def test_unknown_shellflags_fail_the_recipe_with_a_usage_line(db: Path, tmp_path: Path) -> None:
    _, result = build(tmp_path, db, ".SHELLFLAGS := --cpus 4 -c\nall:\n\ttouch done\n")
    assert result.returncode == 2
    assert "slurm-hog-shell: error: unknown option --cpus" in result.stderr
    assert "usage: slurm-hog-shell" in result.stderr and "Error 2" in result.stderr
    assert tasks(db) == []


def test_a_hog_that_never_comes_is_reported_after_max_wait(db: Path, tmp_path: Path) -> None:
    _, result = build(tmp_path, db, ".SHELLFLAGS := --max-wait 2s -c\nall:\n\ttouch done\n")
    assert result.returncode == 2
    assert "no hog runs and no monitor serves" in result.stderr
    assert "gave up after 2.0s (--max-wait)" in result.stderr and "Error 3" in result.stderr
    assert states(db) == ["cancelled"]


# -- on the local SLURM cluster --------------------------------------------------------------


@pytest.mark.slurm
def test_the_dag_through_hogs_on_the_local_slurm_cluster(db: Path, tmp_path: Path, slurm_env: dict) -> None:  # noqa: F811
    keeper = monitor(db, slurm_env, "--command-prefix", "srun -N1 --exclusive -t 5", "--hogs", "3")
    try:
        folder = tmp_path / "build"
        makefile(folder, DAG.replace("$$HOSTNAME", "$$SLURMD_NODENAME"))
        env = {**slurm_env, "SLURM_HOG_DB": str(db)}
        result = subprocess.run(
            ["make", "-j8"], cwd=folder, capture_output=True, text=True, env=env, timeout=300
        )
        assert result.returncode == 0, result.stderr
        lines = (folder / "final.txt").read_text().splitlines()
        assert lines[0::2] == [f"leaf {n}" for n in range(1, 5)]
        nodes = {line.rsplit(" ", 1)[1] for line in lines[1::2]}
        assert nodes and nodes <= {"n1", "n2", "n3", "n4"}, nodes
        assert states(db) == ["done"] * 10
        # Idle for 3 s after the build, the hogs leave and give their nodes back.
        wait_until(
            lambda: all(hog["state"] == "finished" for hog in cli_json(db, "show", "-H", env=env)),
            timeout=120,
            message="every hog finished",
        )
    finally:
        keeper.send_signal(signal.SIGTERM)
        keeper.wait(timeout=60)


def test_a_share_of_a_gpu_in_shellflags_is_a_share_as_with_submit(db: Path, tmp_path: Path) -> None:
    _, result = build(tmp_path, db, ".SHELLFLAGS := --gpus 0.5 --max-wait 1s -c\nall:\n\ttrue\n")
    assert result.returncode == 2 and "Error 3" in result.stderr  # no hog: given up, cancelled
    assert [task["gpus"] for task in tasks(db)] == [0.5]
    _, result = build(tmp_path, db, ".SHELLFLAGS := --gpus 0.3 -c\nall:\n\ttrue\n")
    assert "slurm-hog-shell: error: --gpus 0.3 does not pack onto GPUs" in result.stderr


def test_kinds_and_pools_reach_recipes_as_with_submit(db: Path, tmp_path: Path) -> None:
    from helpers import cli

    cli(db, "kind", "set", "wide", "--cores", "2", "--time", "10m", "--pool", "big")
    body = """
all: kind given exported
kind: .SHELLFLAGS := --kind wide --max-wait 1s -c
kind:
\ttrue
given: .SHELLFLAGS := --kind wide --cores 1 --pool small --max-wait 1s -c
given:
\ttrue
exported: export SLURM_HOG_KIND := wide
exported: .SHELLFLAGS := --max-wait 1s -c
exported:
\ttrue
"""
    _, result = build(tmp_path, db, body, "-k")
    assert "Error 3" in result.stderr  # no hog serves these pools: each recipe gives up
    assert sorted((task["cores"], task["pool"]) for task in tasks(db)) == [
        (1, "small"),
        (2, "big"),
        (2, "big"),
    ]
    limits = [task["time_limit_s"] for task in cli_json(db, "check", "--full", "1-3")]
    assert limits == [600.0] * 3
    _, result = build(tmp_path, db, ".SHELLFLAGS := --kind nope -c\nall:\n\ttrue\n")
    assert "slurm-hog-shell: error: no kind 'nope'" in result.stderr
