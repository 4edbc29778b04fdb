"""slurm-hog-shell starts once per make recipe: what it imports, and the light stand-ins it uses."""

import json
import pickle
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from helpers import child_env
from hypothesis import given
from hypothesis import strategies as st

from hog.records import NamedTuple
from hog.store.submitting import encode_argv

SHELL = Path(sys.executable).with_name("slurm-hog-shell")
# Each would add milliseconds to every recipe (re and enum through json, typing, signal or
# contextlib; click is a third of a start).
HEAVY = {
    "re",
    "enum",
    "typing",
    "json",
    "contextlib",
    "functools",
    "click",
    "fractions",
    "decimal",
    "pathlib",
}


def imported(argv: list[str], **env: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """The modules a process imports, from CPython's own import-time report."""
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=child_env(PYTHONPROFILEIMPORTTIME="1", **env)
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    return modules, result


@pytest.mark.usefixtures("hog")
def test_a_recipe_runs_through_the_shell_without_importing_heavy_modules(db: Path) -> None:
    floor, _ = imported([sys.executable, "-c", "import apsw"])
    modules, result = imported(
        [str(SHELL), "--time", "5m", "--mem", "1G", "-c", "echo ran"], SLURM_HOG_DB=str(db)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ran\n"
    assert "hog.store.submitting" in modules  # the report covers the submit and the wait
    assert sorted((modules - floor) & HEAVY) == []


def test_a_shell_given_a_missing_queue_says_so_without_heavy_modules(tmp_path: Path) -> None:
    floor, _ = imported([sys.executable, "-c", "import apsw"])
    modules, result = imported([str(SHELL), "--db", str(tmp_path / "missing.sqlite"), "-c", "true"])
    assert result.returncode == 1
    assert "no queue database" in result.stderr
    assert sorted((modules - floor) & HEAVY) == []


# -- hog.records.NamedTuple, as typing's ---------------------------------------------------


class Light(NamedTuple):
    """A light one."""

    name: str
    cores: int = 1
    pool: str | None = None

    @property
    def wide(self) -> bool:
        return self.cores > 1

    def doubled(self) -> "Light":
        return self._replace(cores=2 * self.cores)


# The same body as Light on typing's base, written out: a class made in a function would not pickle.
class Typed(typing.NamedTuple):
    """A light one."""

    name: str
    cores: int = 1
    pool: str | None = None

    @property
    def wide(self) -> bool:
        return self.cores > 1

    def doubled(self) -> "Typed":
        return self._replace(cores=2 * self.cores)


@pytest.mark.parametrize("cls", [Light, Typed])
def test_a_light_named_tuple_behaves_as_typings(cls: type) -> None:
    row = cls("a", 4)
    assert row == ("a", 4, None) and row.name == "a" and row.pool is None
    assert cls._fields == ("name", "cores", "pool")
    assert cls._field_defaults == {"cores": 1, "pool": None}
    assert cls("b").cores == 1
    assert row.wide and not cls("b").wide
    assert row.doubled() == ("a", 8, None) and type(row.doubled()) is cls
    assert row._asdict() == {"name": "a", "cores": 4, "pool": None}
    assert list(cls.__annotations__) == ["name", "cores", "pool"]
    assert cls.__doc__ == "A light one."
    assert cls.__qualname__ == cls.__name__ and cls.__module__ == __name__
    assert pickle.loads(pickle.dumps(row)) == row
    assert repr(row) == f"{cls.__name__}(name='a', cores=4, pool=None)"
    with pytest.raises(AttributeError):
        row.cores = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        cls()  # name has no default


# -- argv as JSON without json ---------------------------------------------------------------


@given(st.lists(st.text()))
def test_argv_is_encoded_as_json_dumps_writes_it(argv: list[str]) -> None:
    assert encode_argv(argv) == json.dumps(argv)
    assert json.loads(encode_argv(argv)) == argv


def test_argv_with_bytes_that_are_not_utf8_survives() -> None:
    argv = ["printf", "%s", "caf\udce9", 'a "quoted"\\ line\n']
    assert json.loads(encode_argv(argv)) == argv
