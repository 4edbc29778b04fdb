"""The README's CLI reference stays in step with the commands."""

import re

import click
import pytest
from helpers import REPO

from hog.cli.group import cli

README = (REPO / "README.rst").read_text()
REFERENCE = README.split("Command reference\n=================", 1)[1].split("\nPerformance\n", 1)[0]
COMMANDS = cli.list_commands(click.Context(cli))


def command(name: str) -> click.Command:
    found = cli.get_command(click.Context(cli), name)
    assert found is not None
    return found


def test_the_reference_lists_exactly_the_commands() -> None:
    documented = set(re.findall(r"^``slurm-hog (\w+)", REFERENCE, re.MULTILINE))
    assert documented == set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(name: str) -> None:
    help_text = command(name).help or ""
    assert help_text.strip(), f"{name} has no help"
    assert "Example" in help_text, f"{name}'s help shows no example"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_documented_under_its_command(name: str) -> None:
    section = REFERENCE.split(f"\n``slurm-hog {name}", 1)[1].split("\n``slurm-hog ", 1)[0]
    for parameter in command(name).params:
        if not isinstance(parameter, click.Option) or parameter.hidden:
            continue
        longest = max(parameter.opts, key=len)
        if longest in ("--db", "--timeout", "--help"):
            continue
        assert longest in section, f"{longest} of `slurm-hog {name}` is not in the README"


def test_the_readme_shows_the_two_commands() -> None:
    assert "scripts/example.sh" in README
    assert "scripts/test.sh" in README
    assert (REPO / ".ci" / "run").read_text().count("scripts/test.sh") == 1


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_says_what_it_is(name: str) -> None:
    for parameter in command(name).params:
        if isinstance(parameter, click.Option) and not parameter.hidden:
            assert parameter.help, f"{max(parameter.opts, key=len)} of `slurm-hog {name}` has no help"
