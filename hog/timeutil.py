"""Durations, sizes and counts as users type and read them; parsed only at the CLI edge."""

from hog.errors import UsageError

# Parsed by hand, not with re: re (with enum) would be a quarter of slurm-hog-shell's start.
_SUFFIX_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
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


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _is_decimal(text: str, bare_fraction: bool = False) -> bool:
    """`text` is a number like 12 or 1.5 (or .5 when `bare_fraction`)."""
    whole, dot, fraction = text.partition(".")
    if not dot:
        return _is_digits(whole)
    return (_is_digits(whole) or (bare_fraction and not whole)) and _is_digits(fraction)


def _parse_suffixed(value: str) -> float | None:
    """90s, 1.5h, .5d"""
    if value[-1:] not in _SUFFIX_S or not _is_decimal(value[:-1], bare_fraction=True):
        return None
    return float(value[:-1]) * _SUFFIX_S[value[-1]]


def _parse_slurm(value: str) -> float | None:
    """SLURM's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    days, dash, rest = value.rpartition("-")
    parts = rest.split(":")
    if (dash and not _is_digits(days)) or len(parts) > 3 or not all(map(_is_digits, parts)):
        return None
    numbers = [int(part) for part in parts]
    if dash:
        hours, minutes, seconds = numbers + [0] * (3 - len(numbers))
        return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    if len(numbers) == 3:
        return numbers[0] * 3600 + numbers[1] * 60 + numbers[2]
    if len(numbers) == 2:
        return numbers[0] * 60 + numbers[1]
    return numbers[0] * 60


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
    value = text.strip().lower()
    value = value[:-2] if value.endswith("ib") else value.removesuffix("b")  # 4GiB, 4GB
    unit = value[-1:] if value[-1:] in ("k", "m", "g", "t") else ""
    number = value[: len(value) - len(unit)].rstrip()
    if len(text) > 40 or not _is_decimal(number):
        raise UsageError(f"bad {what} {text!r}: use a number with K, M, G or T, like 500M or 4G")
    size = int(float(number) * _SIZE_FACTOR[unit])
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
