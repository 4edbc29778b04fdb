"""report --html: a real run with a lost hog (kill -9), a failure and a straggler, its page opened
in headless Chromium: no script errors, the summary's numbers those of the database, a screenshot."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import apsw
import pytest
from helpers import cli, start_hog, tasks, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="no chromium (scripts/test.sh installs Debian's chromium)",
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=3000",
)


def chromium(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile, no network of its own; its log on stderr."""
    assert CHROMIUM is not None, "chromium is not installed (scripts/test.sh installs it)"
    profile = folder / f"profile-{len(list(folder.glob('profile-*')))}"
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A queue after a run: hog 1 killed with -9 while it ran `victim` (which hog 2 ran again),
    a task that failed with a message on stderr, a straggler, and short tasks."""
    folder = tmp_path_factory.mktemp("report")
    db = folder / "queue.sqlite"
    assert cli(db, "init").returncode == 0
    # Its first attempt runs until its hog is killed; the next one ends at once.
    marker = folder / "victim-ran"
    victim = f"test -e {marker} && exit 0; touch {marker}; sleep 600"
    assert cli(db, "submit", "--name", "victim", victim).returncode == 0
    first = start_hog(db, "--cores", "1", "--heartbeat", "1s", "--idle-timeout", "1m")
    wait_until(marker.exists, message="the victim to start on hog 1")
    wait_until(lambda: tasks(db)[0]["started_at"], message="hog 1 to write the victim's start")
    first.send_signal(signal.SIGKILL)
    first.wait()
    for number in range(6):
        assert cli(db, "submit", "--name", "short", f"sleep 0.{number + 1}").returncode == 0
    assert cli(db, "submit", "--name", "broken", "echo 'cannot read input.dat' >&2; exit 3").returncode == 0
    assert cli(db, "submit", "--name", "straggler", "sleep 4").returncode == 0
    second = start_hog(db, "--cores", "2", "--heartbeat", "1s", "--idle-timeout", "1m")
    # Hog 2 declares hog 1 lost once its lease ran out, and runs the victim again.
    assert cli(db, "wait", "--max-wait", "2m", timeout=180).returncode == 1  # one failed
    second.send_signal(signal.SIGINT)  # drain: it leaves at once, nothing runs
    assert second.wait(timeout=60) == 0
    return db


def page_of(db: Path, *args: str) -> Path:
    page = db.parent / f"report{len(list(db.parent.glob('report*.html')))}.html"
    result = cli(db, "report", "--html", str(page), *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {page} ("), result.stdout
    return page


def embedded(page: Path) -> dict:
    text = page.read_text()
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
    assert found
    return json.loads(found.group(1))


def database(db: Path) -> apsw.Connection:
    connection = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    connection.set_busy_timeout(30_000)  # hogs may be writing
    return connection


def one(connection: apsw.Connection, sql: str) -> object:
    return connection.execute(sql).fetchall()[0][0]


@needs_chromium
def test_the_page_opens_without_errors_and_its_summary_is_the_databases(run: Path) -> None:
    page = page_of(run)
    result = chromium(run.parent, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert 'data-rendered="yes"' in dom, "the page's script did not run to its end"
    assert re.search(r'<pre id="errors" hidden="">\s*</pre>', dom), dom[:2000]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    shown = {key: value for key, value in re.findall(r'data-key="([^"]+)" data-value="([^"]*)"', dom)}
    connection = database(run)
    assert int(shown["tasks"]) == one(connection, "SELECT count(*) FROM tasks") == 9
    assert int(shown["tasks.done"]) == one(connection, "SELECT count(*) FROM tasks WHERE state = 'done'") == 8
    assert int(shown["tasks.failed"]) == 1
    assert int(shown["attempts"]) == one(connection, "SELECT count(*) FROM attempts") == 10
    lost = one(connection, "SELECT count(*) FROM attempts WHERE reason = 'lost'")
    assert int(shown["attempts.lost"]) == lost == 1
    assert int(shown["attempts.failed"]) == 1
    assert int(shown["hogs"]) == 2 and int(shown["hogs.lost"]) == 1 and int(shown["hogs.finished"]) == 1
    held = one(connection, "SELECT sum(cores * (ended_at - launched_at)) FROM hogs") / 3600
    busy = one(connection, "SELECT sum(ended_at - started_at) FROM attempts WHERE started_at IS NOT NULL")
    cpu = one(connection, "SELECT sum(cpu_user_s + cpu_system_s) FROM attempts")
    assert float(shown["held_core_hours"]) == pytest.approx(held, rel=1e-9)
    assert float(shown["busy_core_hours"]) == pytest.approx(busy / 3600, rel=1e-9)  # one-core tasks
    assert float(shown["cpu_hours"]) == pytest.approx(cpu / 3600, rel=1e-9)
    assert float(shown["efficiency"]) == pytest.approx(busy / 3600 / held, rel=1e-9)
    # Every idle cause the hogs recorded, and what remains, add up to what they held.
    parts = ("busy", "startup", "lock", "empty", "drain", "other")
    split = sum(float(shown[f"split.{part}"]) for part in parts)
    assert split == pytest.approx(held, rel=1e-6)
    assert float(shown["split.startup"]) > 0 and float(shown["split.empty"]) > 0


@needs_chromium
def test_the_screenshot_shows_the_page(run: Path) -> None:
    page = page_of(run)
    shot = run.parent / "report.png"
    result = chromium(run.parent, "--window-size=1400,2400", f"--screenshot={shot}", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    # Kept for a person to look at: SLURM_HOG_KEEP_SCREENSHOT=FILE copies it there.
    keep = os.environ.get("SLURM_HOG_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_the_timeline_shows_the_lost_hog_the_failure_and_the_straggler(run: Path) -> None:
    data = embedded(page_of(run))
    lost = [hog for hog in data["hogs"] if hog["state"] == "lost"]
    assert len(lost) == 1 and lost[0]["end_reason"] == "no heartbeat"
    timeline = data["timeline"]
    assert timeline["mode"] == "each" and timeline["attempts"] == 10
    bars = timeline["bars"]
    names = timeline["bar_names"]
    outcomes = data["outcomes"]
    drawn = [
        (names[bars["name"][k]], outcomes[bars["outcome"][k]], bars["length"][k], bars["row"][k])
        for k in range(len(bars["row"]))
    ]
    assert ("victim", "lost") in {(name, outcome) for name, outcome, _, _ in drawn}
    assert [row for name, outcome, _, row in drawn if outcome == "lost"] == [data["hogs"].index(lost[0])]
    assert ("broken", "failed") in {(name, outcome) for name, outcome, _, _ in drawn}
    assert max(drawn, key=lambda bar: bar[2])[0] == "straggler"
    # The second hog ran two tasks at once: one lane per CPU.
    assert max(timeline["lanes"]) == 2
    failures = data["failures"]
    assert [failure["name"] for failure in failures] == ["broken"]
    assert "cannot read input.dat" in failures[0]["tail"] and failures[0]["why"] == "exit 3"
    assert data["series"]["running"] and max(data["series"]["running"]) >= 1
    assert sum(data["series"]["done"]) == 8
    assert data["series"]["queued"][-1] == 0 and max(data["series"]["queued"]) >= 8


def test_the_page_fetches_nothing(run: Path) -> None:
    text = page_of(run).read_text()
    assert not re.search(r"(src|href)\s*=", text, re.I)
    assert "http://" not in text and "https://" not in text
    assert "default-src 'none'" in text


def test_a_name_a_bundle_or_a_time_selects_tasks(run: Path) -> None:
    data = embedded(page_of(run, "--name", "short"))
    assert sum(data["summary"]["tasks"].values()) == 6
    assert [name["name"] for name in data["names"]] == ["short"]
    assert [hog["state"] for hog in data["hogs"]] == ["finished"]  # only the hog that ran them
    later = embedded(page_of(run, "--since", "2026-01-01T00:00"))
    assert sum(later["summary"]["tasks"].values()) == 9
    none = embedded(page_of(run, "--since", "1s"))
    assert sum(none["summary"]["tasks"].values()) == 0


def fingerprint(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        ((), 2, "Missing option '--html'"),
        (("--html", "{folder}/r.html", "--name", "nosuch"), 2, "no task has the name 'nosuch'"),
        (("--html", "{folder}/r.html", "--bundle", "nosuch"), 2, "no task has the bundle 'nosuch'"),
        (("--html", "{folder}/r.html", "--kind", "nosuch"), 2, "no task has the kind 'nosuch'"),
        (("--html", "{folder}/r.html", "--since", "yesterday"), 2, "bad --since 'yesterday'"),
        (("--html", "{folder}/no/such/folder/r.html"), 1, "cannot write"),
        (("--html", "{folder}"), 2, "is a folder"),
    ],
)
def test_bad_input_says_what_and_changes_nothing(run: Path, args: tuple, code: int, words: str) -> None:
    before = fingerprint(run)
    result = cli(run, "report", *(arg.format(folder=run.parent) for arg in args))
    assert result.returncode == code, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    assert fingerprint(run) == before
    assert not (run.parent / "r.html").exists()


def test_an_empty_queue_gives_a_page(db: Path) -> None:
    data = embedded(page_of(db))
    assert data["hogs"] == [] and data["names"] == [] and data["timeline"]["attempts"] == 0


def test_a_running_hog_and_its_draining_show(db: Path) -> None:
    """A page made while a task runs shows it running; a hog draining with a free core records
    that core's time as draining."""
    go = db.parent / "go"  # the task runs until the test makes this file
    assert cli(db, "submit", "--name", "long", f"while [ ! -e {go} ]; do sleep 0.1; done").returncode == 0
    assert cli(db, "submit", "--hold", "--name", "never", "true").returncode == 0
    hog_log = db.parent / "hog.log"
    hog = start_hog(db, "--cores", "2", "--idle-timeout", "1m", log_path=hog_log)
    wait_until(lambda: tasks(db)[0]["started_at"], message="the task to start")
    during = embedded(page_of(db))
    assert during["summary"]["attempts"] == {"running": 1}
    assert during["timeline"]["bars"]["outcome"] == [during["outcomes"].index("running")]
    assert [hog["state"] for hog in during["hogs"]] == ["running"]
    hog.send_signal(signal.SIGINT)  # drain: the running task finishes, nothing new starts
    wait_until(lambda: "SIGINT: draining" in hog_log.read_text(), message="the hog to drain")
    go.touch()
    assert hog.wait(timeout=60) == 0
    after = embedded(page_of(db))
    assert after["summary"]["tasks"]["done"] == 1
    assert after["series"]["queued"][-1] == 1  # the held task
    assert cli(db, "cancel", "--all").returncode == 0
    assert embedded(page_of(db))["series"]["queued"][-1] == 0
    assert after["summary"]["idle_core_s"]["drain"] > 0
    assert after["hogs"][0]["end_reason"] == "drained"


def test_free_cores_while_a_claim_waits_for_the_lock_count_as_waiting_for_the_lock(db: Path) -> None:
    """Another process holds the queue's lock while an idle hog wants to claim: its free core's
    time counts as waiting for the lock, and its lock wait is on its row."""
    import fcntl
    import time

    # Heartbeats 30 s apart: its rounds meanwhile are its claims, one a second while idle.
    hog = start_hog(db, "--cores", "1", "--heartbeat", "30s", "--idle-timeout", "1m")
    # Past its start-up: it has found nothing to run, and claims again every second.
    wait_until(
        lambda: one(database(db), "SELECT max(idle_empty_core_s) FROM hogs"), message="the hog to idle"
    )
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        time.sleep(2.5)  # a claim round waits meanwhile (not a timing assertion: it only must wait)
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert cli(db, "submit", "true").returncode == 0
    assert cli(db, "wait", "--max-wait", "1m").returncode == 0
    hog.send_signal(signal.SIGINT)
    assert hog.wait(timeout=60) == 0
    data = embedded(page_of(db))
    assert data["summary"]["idle_core_s"]["lock"] > 0
    assert data["hogs"][0]["lock_wait_s"] > 0
    assert data["summary"]["idle_core_s"]["empty"] > 0


def test_hogs_that_did_not_record_why_they_idled_are_said(db: Path) -> None:
    """A hog of a slurm-hog before the idle split (no usage on its heartbeat): its whole time is
    other, and the page says why."""
    from hog.store import claims
    from hog.store.db import open_database

    queue = open_database(str(db))
    info = claims.HogInfo("oldnode", 1, None, 2, [], 1 << 30, None, 60.0)
    hog_id = claims.start_hog(queue, info, now=1000.0)
    assert hog_id is not None
    claims.exchange(queue, hog_id, "oldnode", [], None, {}, finish_reason="idle", now=1060.0)
    queue.close()
    data = embedded(page_of(db))
    assert any("1 of 1 hogs ran an older slurm-hog" in note for note in data["notes"])
    assert data["summary"]["held_core_s"] == pytest.approx(120.0)
    assert data["summary"]["idle_core_s"]["other"] == pytest.approx(120.0)


@needs_chromium
def test_names_and_stderr_that_look_like_html_stay_text(db: Path) -> None:
    name = '<i>"odd"</i>'
    stderr = "</script><script>document.body.dataset.rendered = 'hijacked'</script><b>bold</b>"
    assert cli(db, "submit", "--name", name, f'echo "{stderr}" >&2; exit 3').returncode == 0
    hog = start_hog(db, "--cores", "1", "--idle-timeout", "1s")
    assert hog.wait(timeout=60) == 0
    page = page_of(db)
    assert embedded(page)["failures"][0]["tail"].strip() == stderr
    result = chromium(db.parent, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'data-rendered="yes"' in result.stdout
    assert "&lt;/script&gt;&lt;script&gt;" in result.stdout and "<b>bold</b>" not in result.stdout
    assert '&lt;i&gt;"odd"&lt;/i&gt;' in result.stdout
