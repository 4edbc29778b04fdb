"""Durations, sizes and counts as users type and read them; parsed only at the CLI edge."""

import re

from hog.errors import UsageError

_SUFFIX_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SUFFIXED = r"(\d+(?:\.\d+)?|\.\d+)([smhd])"
# SLURM's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_SLURM = r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?"
_SIZE = r"(?i)(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?"
# Patterns, compiled on first use by re's cache: most commands never parse a duration.
_SIZE_FACTOR = {"": 1 << 20, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
DURATION_HELP = "SLURM's M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, or 90s, 15m, 2h, 1d"
# What every duration option's help ends with.
DURATION_FORMS = "90s, 15m, 2h, 1d, or SLURM's M:S, H:M:S, D-H:M; a bare number is minutes, as in SLURM"


def parse_duration(text: str, what: str = "duration", allow_zero: bool = False) -> float:
    """Seconds in `text`; raise UsageError naming `what` and the accepted forms."""
    value = text.strip().lower()
    if len(value) > 40:
        raise UsageError(f"bad {what} {text[:40]!r}...: too long; use {DURATION_HELP}")
    seconds = _parse_suffixed(value)
    if seconds is None:
        seconds = _parse_slurm(value)
    if seconds is None or seconds != seconds or seconds > 100 * 365 * 86400:
        raise UsageError(f"bad {what} {text!r}: use {DURATION_HELP}")
    if seconds <= 0 and not (allow_zero and seconds == 0):
        raise UsageError(f"bad {what} {text!r}: it must be longer than zero")
    return seconds


def _parse_suffixed(value: str) -> float | None:
    match = re.fullmatch(_SUFFIXED, value)
    if not match:
        return None
    return float(match.group(1)) * _SUFFIX_S[match.group(2)]


def _parse_slurm(value: str) -> float | None:
    match = re.fullmatch(_SLURM, value)
    if not match:
        return None
    days, first, second, third = match.groups()
    if days is not None:
        # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    if third is not None:
        return int(first) * 3600 + int(second) * 60 + int(third)
    if second is not None:
        return int(first) * 60 + int(second)
    return int(first) * 60


def split_duration(seconds: float) -> tuple[int, int, int, int]:
    """Whole days, hours, minutes and seconds in `seconds`."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return days, hours, minutes, secs


def format_duration(seconds: float | None) -> str:
    """Short human form: 42s, 3m05s, 2h10m, 1d04h."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    days, hours, minutes, secs = split_duration(seconds)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def parse_size(text: str, what: str = "size") -> int:
    """Bytes in `text` (500M, 4G, 1.5G; a bare number is MiB as in SLURM's --mem)."""
    match = re.fullmatch(_SIZE, text.strip()) if len(text) <= 40 else None
    if not match:
        raise UsageError(f"bad {what} {text!r}: use a number with K, M, G or T, like 500M or 4G")
    size = int(float(match.group(1)) * _SIZE_FACTOR[match.group(2).lower()])
    if size <= 0 or size > 1 << 60:
        raise UsageError(f"bad {what} {text!r}: it must be larger than zero and below an exabyte")
    return size


def counted(number: int, noun: str) -> str:
    """ "1 task", "2 tasks": a count with its noun in the right number (nouns that add an s)."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def format_size(size: int) -> str:
    """Short human form in binary units: 512 B, 3.1 MiB, 8.0 GiB."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"
