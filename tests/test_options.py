"""A hog's and a monitor's options survive the trip to a command line and back through the CLI."""

from pathlib import Path

import click
from hypothesis import given, settings
from hypothesis import strategies as st

from hog.cli.group import Settings, cli
from hog.cli.hogs import monitor_config
from hog.fleet.backends import hog_command
from hog.fleet.monitor import MonitorConfig
from hog.pilot.options import HogOptions

# Durations as the command line takes them: above zero, at most a century.
SECONDS = st.floats(min_value=1e-6, max_value=3e9, allow_nan=False)
HOG_OPTIONS = st.builds(
    HogOptions,
    cores=st.none() | st.integers(1, 4096),
    gpus=st.none() | st.sampled_from(["0", "4", "0,1", "2,3,GPU-7f"]),
    mem_bytes=st.none() | st.integers(1, 1 << 50),
    walltime_s=st.none() | SECONDS,
    end_at=st.none() | st.floats(min_value=0, max_value=4e9, allow_nan=False),
    margin_s=st.none() | SECONDS,
    idle_timeout_s=SECONDS,
    heartbeat_s=SECONDS,
)


def command(name: str) -> click.Command:
    found = cli.get_command(click.Context(cli), name)
    assert found is not None
    return found


def parse_hog(argv: list[str]) -> HogOptions:
    """What the `hog` command builds from `argv` (its own options, after `hog`)."""
    params = dict(command("hog").make_context("hog", argv).params)
    del params["hog_id"], params["allow_insecure"], params["bundle"]
    return HogOptions(**params)


def test_the_command_line_defaults_are_those_of_hog_options() -> None:
    assert parse_hog([]) == HogOptions()
    assert HogOptions().to_argv() == ["--idle-timeout", "60s", "--heartbeat", "30s"]
    assert HogOptions(heartbeat_s=1.0).lease_s == 5.0


@settings(max_examples=200, deadline=None)
@given(options=HOG_OPTIONS)
def test_hog_options_parse_back_from_their_command_line(options: HogOptions) -> None:
    assert parse_hog(options.to_argv()) == options


def test_the_monitor_starts_hogs_with_its_hog_options() -> None:
    options = HogOptions(cores=2, mem_bytes=3 * 1024 + 5, walltime_s=90.5, heartbeat_s=0.00001)
    argv = hog_command("queue.sqlite", 12.5, 7, options)
    at = argv.index("hog", argv.index("--timeout"))
    assert argv[at + 1 : at + 3] == ["--hog-id", "7"]
    assert parse_hog(argv[at + 1 :]) == options


@settings(max_examples=50, deadline=None)
@given(
    hog_options=HOG_OPTIONS,
    # Each backend with its own options (the other backend's are refused).
    backend_options=st.sampled_from(
        [
            ("prefix", "nohup", ""),
            ("prefix", "srun -N1 --exclusive -t 4:00:00", ""),
            ("prefix", "ssh 'node 7'", ""),
            ("prefix", None, ""),
            ("sbatch", None, ""),
            ("sbatch", None, "-p short -A lab"),
        ]
    ),
    hogs=st.integers(0, 64),
    poll_s=SECONDS,
    once=st.booleans(),
)
def test_a_monitor_configuration_parses_back_from_its_command_line(
    hog_options: HogOptions,
    backend_options: tuple[str, str | None, str],
    hogs: int,
    poll_s: float,
    once: bool,
) -> None:
    """What `monitor --daemon` starts is the monitor it was asked for."""
    backend, prefix, sbatch_args = backend_options
    config = MonitorConfig.from_options(
        str(Path("/queues/q.sqlite")), 42.5, prefix, hogs, backend, sbatch_args, poll_s, once, hog_options
    )
    argv = config.to_argv()
    at = argv.index("monitor")
    root = cli.make_context("slurm-hog", [*argv[:at], "monitor"])
    parsed = command("monitor").make_context("monitor", argv[at + 1 :], parent=root)
    params = dict(parsed.params)
    assert not any(
        params.pop(action) for action in ("daemon", "status", "stop", "drain", "show_log", "follow")
    )
    settings_ = root.find_object(Settings)
    assert monitor_config(settings_, **params) == config
