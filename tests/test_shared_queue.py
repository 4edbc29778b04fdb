"""A queue shared by a group (`init --group`): two real users take turns, whatever their umask."""

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
from helpers import REPO

GROUP = "hoglab"
MEMBERS = ("hogalice", "hogbob")
OUTSIDER = "hogcarol"
# /root (where this interpreter may live) is closed to other users: they run the system's Python
# of the same version with this environment's packages (scripts/install.sh installs it in CI).
SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
SBIN = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"
RUNUSER = shutil.which("runuser", path=SBIN)


def _missing() -> str | None:
    """Why this machine cannot run these tests, or None."""
    if os.geteuid() != 0:
        return "needs root to create users"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"needs {SYSTEM_PYTHON}, the system's Python of this version"
    for tool in ("useradd", "groupadd", "usermod", "runuser"):
        if not shutil.which(tool, path=SBIN):
            return f"needs {tool}"
    return None


MISSING = _missing()
pytestmark = pytest.mark.skipif(
    MISSING is not None and os.environ.get("CI") != "true", reason=f"real Unix users: {MISSING}"
)


def _ensure(exists, create: list[str]) -> None:
    """Run `create` unless `exists()`; a test in another checkout may create it meanwhile."""
    if not exists():
        result = subprocess.run(create, capture_output=True, text=True, env={"PATH": SBIN})
        assert result.returncode == 0 or exists(), result.stderr


def _group_exists() -> bool:
    try:
        return bool(grp.getgrnam(GROUP))
    except KeyError:
        return False


def _user_exists(name: str) -> bool:
    try:
        return bool(pwd.getpwnam(name))
    except KeyError:
        return False


@pytest.fixture(scope="module")
def users() -> None:
    """Two members of GROUP and one outsider, real users (kept: the next run reuses them)."""
    assert MISSING is None, f"CI needs this test: it {MISSING}"
    _ensure(_group_exists, ["groupadd", GROUP])
    for name in (*MEMBERS, OUTSIDER):
        # -U: each user has a primary group of their own, as on most clusters.
        _ensure(lambda name=name: _user_exists(name), ["useradd", "-U", "-M", "-s", "/bin/sh", name])
    for name in MEMBERS:
        if name not in grp.getgrnam(GROUP).gr_mem:
            subprocess.run(["usermod", "-a", "-G", GROUP, name], check=True, env={"PATH": SBIN})


@pytest.fixture(params=[0o2770, 0o770], ids=["setgid-folder", "plain-folder"])
def shared(users, request) -> Path:
    """A folder of the group as a lab makes it: 2770 (setgid), or 0770 without setgid."""
    folder = Path(tempfile.mkdtemp(prefix="hog-shared-", dir="/tmp"))
    os.chown(folder, 0, grp.getgrnam(GROUP).gr_gid)
    os.chmod(folder, request.param)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_user(
    user: str, db: Path, *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """`slurm-hog --db DB ARGS` run by `user` with umask 077, the least friendly one."""
    site = sysconfig.get_paths()["purelib"]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(db.parent),
        "PYTHONPATH": f"{REPO}{os.pathsep}{site}",
        "LANG": "C.UTF-8",
    }
    command = ["sh", "-c", 'umask 077; exec "$@"', "sh", SYSTEM_PYTHON, "-m", "hog", "--db", str(db), *args]
    return subprocess.run(
        [RUNUSER or "runuser", "-u", user, "--", *command],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or db.parent,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def group_shared(path: Path) -> None:
    info = path.stat()
    assert info.st_gid == grp.getgrnam(GROUP).gr_gid, f"{path} is not in group {GROUP}"
    mode = stat.S_IMODE(info.st_mode)
    if path.is_dir():
        assert mode & 0o2070 == 0o2070, f"{path}: mode {mode:o}, wants group rwx and setgid"
    else:
        assert mode & 0o060 == 0o060, f"{path}: mode {mode:o}, wants group read and write"
    assert mode & 0o007 == 0, f"{path}: mode {mode:o} lets others in"


def test_two_members_of_the_group_share_a_queue(shared: Path) -> None:
    alice, bob = MEMBERS
    db = shared / "queue.sqlite"
    hog = ("hog", "--idle-timeout", "1s", "--heartbeat", "1s")
    ok(as_user(alice, db, "init", "--group", GROUP))
    ok(as_user(alice, db, "submit", "echo from alice"))
    ok(as_user(bob, db, "submit", "echo from bob"))
    ok(as_user(alice, db, *hog))
    # Alice's hog made the log folders and files: bob reads them, and his hog writes beside them.
    assert ok(as_user(bob, db, "log", "1")) == "from alice\n"
    assert ok(as_user(bob, db, "log", "2")) == "from bob\n"
    ok(as_user(bob, db, "submit", "echo bob again"))
    ok(as_user(bob, db, *hog))
    assert ok(as_user(alice, db, "log", "3")) == "bob again\n"
    # A monitor run by bob: its files beside the queue and its hogs' logs are the group's too.
    ok(as_user(bob, db, "submit", "echo from the monitor"))
    ok(as_user(bob, db, "monitor", "--once", "--poll", "0.2s", *hog[1:]))
    assert as_user(alice, db, "monitor", "--status").returncode == 1  # none runs now
    assert ok(as_user(alice, db, "log", "4")) == "from the monitor\n"
    assert ok(as_user(alice, db, "check", "1-4", "--json")).count('"done"') == 4
    made = [db, Path(f"{db}.lock"), Path(f"{db}.monitor.lock"), *Path(f"{db}.logs").rglob("*")]
    assert list(Path(f"{db}.logs/hogs").glob("hog-*.log")), "the monitor kept no hog log"
    for path in made:
        group_shared(path)
    # A lock file made again by another member is shared too.
    Path(f"{db}.lock").unlink()
    ok(as_user(bob, db, "submit", "true"))
    group_shared(Path(f"{db}.lock"))
    ok(as_user(alice, db, "submit", "true"))


def test_an_output_file_a_member_may_not_read_is_refused_in_one_line(shared: Path) -> None:
    alice, bob = MEMBERS
    db = shared / "queue.sqlite"
    ok(as_user(alice, db, "init", "--group", GROUP))
    ok(as_user(alice, db, "submit", "echo secret"))
    ok(as_user(alice, db, "hog", "--idle-timeout", "1s", "--heartbeat", "1s"))
    output = Path(f"{db}.logs/tasks/000000/1.1.out")
    output.chmod(0o600)  # as alice's own chmod would
    result = as_user(bob, db, "log", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"permission denied: you may not read {output} (mode 600, owner {alice}" in result.stderr


def refused_without_change(result: subprocess.CompletedProcess, db: Path, before: bytes) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert db.read_bytes() == before
    return result.stderr


def test_a_user_outside_the_group_is_told_which_permission_is_missing(shared: Path) -> None:
    db = shared / "queue.sqlite"
    ok(as_user(MEMBERS[0], db, "init", "--group", GROUP))
    ok(as_user(MEMBERS[0], db, "submit", "true"))
    before = db.read_bytes()
    # The lab's folder (2770) is closed to others: the file is there, but not for them.
    for command in (("show",), ("submit", "true"), ("monitor", "--status")):
        message = refused_without_change(as_user(OUTSIDER, db, *command, cwd=Path("/")), db, before)
        assert "permission denied" in message.lower(), message
        assert "create one with init" not in message and "no queue database" not in message, message
        if command[0] != "monitor":
            assert f"may not enter the folder {shared}" in message and GROUP in message, message
    # An open folder, the queue file closed to others (0660).
    os.chmod(shared, 0o2775)
    for command in (("show",), ("submit", "true")):
        message = refused_without_change(as_user(OUTSIDER, db, *command), db, before)
        assert "permission denied" in message.lower(), message
        assert f"may not read {db}" in message and "mode 660" in message, message
