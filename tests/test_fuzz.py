"""The CLI's parsers on arbitrary input: a clear error or a result, never a traceback."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hog.cli.group import cli
from hog.errors import UsageError
from hog.store.db import create_database
from hog.taskfile import read_task_file

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LINES = st.lists(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"# comment", b"   ", b"\r", b"\x00", b"\xff\xfe", b"echo ok", b"x" * 5000]),
    ),
    max_size=30,
)


@FUZZ
@given(lines=LINES, ending=st.sampled_from([b"\n", b"\r\n"]))
def test_task_files_give_commands_or_a_usage_error(tmp_path: Path, lines: list[bytes], ending: bytes) -> None:
    path = tmp_path / "tasks.txt"
    path.write_bytes(ending.join(lines))
    try:
        commands = list(read_task_file(str(path)))
    except UsageError as error:
        assert "line" in str(error) and "nothing was added" in str(error)
        return
    for command, argv in commands:
        assert argv is None
        assert command.strip() and "\0" not in command and "\n" not in command
        assert not command.strip().startswith("#")


@pytest.fixture(scope="module")
def queue_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("fuzz") / "queue.sqlite")
    create_database(path)
    return path


WORDS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@FUZZ
@given(option=st.sampled_from(["-t", "--mem", "-c", "-g", "--priority", "--retries", "-o"]), value=WORDS)
@example(option="-c", value="9223372036854775808")  # past sqlite's integers
@example(option="-g", value="9223372036854775808")
def test_submit_options_never_raise(queue_path: str, option: str, value: str) -> None:
    result = CliRunner().invoke(cli, ["--db", queue_path, "submit", option, value, "true"])
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


@FUZZ
@given(
    command=st.sampled_from(["check", "cancel", "retry", "wait"]),
    words=st.lists(WORDS, min_size=1, max_size=4),
)
@example(command="check", words=["9223372036854775808"])  # past sqlite's integers
def test_id_lists_never_raise(queue_path: str, command: str, words: list[str]) -> None:
    args = ["--db", queue_path, command, *words] + (["--max-wait", "0.1s", "-q"] if command == "wait" else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code in (0, 1, 2, 3), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
