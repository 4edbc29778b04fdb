"""GPU amounts: whole GPUs, or 1/k of one shared with other tasks, counted exactly in integer units.

Every amount a task asks for is a whole number of GPU_UNITS: a GPU is GPU_UNITS units, half of
one GPU_UNITS // 2. GPU_UNITS is the least common multiple of 1..MAX_SPLIT, so every 1/k is a
whole number of units and sums of any mix of shares stay exact: a device is full at exactly
GPU_UNITS, with no float rounding however many tasks come and go.
"""

import math

from hog.errors import UsageError
from hog.records import TYPE_CHECKING

if TYPE_CHECKING:  # fractions (with decimal) and re are imported where amounts are parsed or printed:
    from fractions import Fraction  # slurm-hog-shell's start, before any, is kept short

MAX_SPLIT = 16  # the most tasks one GPU may be shared by: --gpus 1/16
GPU_UNITS = math.lcm(*range(1, MAX_SPLIT + 1))  # 720720
MAX_GPUS = 1024  # whole GPUs per task: far beyond any node, sums stay within sqlite's integers
_FRACTION = r"\s*1\s*/\s*([0-9]{1,6})\s*"
_NUMBER = r"\s*([0-9]{1,6}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})\s*"
# A share printed as a float (0.3333333333333333, as JSON has it) is read back as the 1/k it was.
_FLOAT_SLACK_DENOMINATOR = 10**12


def fractions_that_pack() -> str:
    return f"1/k of one for k from 2 to {MAX_SPLIT} (0.5, 0.25, 0.2, 0.125, 1/3, 1/6, ...)"


def parse_gpus(text: str, what: str = "--gpus") -> int:
    """GPU units for `text`: a whole number of GPUs (`2`), or a share of one (`0.5`, `1/3`)."""
    amount = _amount(text)
    if amount is None or amount < 0:
        raise UsageError(f"bad {what} {text!r}: give whole GPUs (0, 1, 2, ...) or {fractions_that_pack()}")
    if amount.denominator == 1:
        if amount > MAX_GPUS:
            raise UsageError(f"bad {what} {text}: more GPUs than a node has; give at most {MAX_GPUS}")
        return int(amount) * GPU_UNITS
    split = _split_of(amount)
    if split is None:
        raise UsageError(
            f"{what} {text} does not pack onto GPUs: give whole GPUs (1, 2, ...) or {fractions_that_pack()}"
        )
    return GPU_UNITS // split


def _amount(text: str) -> "Fraction | None":
    import re
    from fractions import Fraction

    match = re.fullmatch(_FRACTION, text)
    if match:
        denominator = int(match.group(1))
        return Fraction(1, denominator) if denominator else None
    match = re.fullmatch(_NUMBER, text)
    return Fraction(match.group(1)) if match else None


def _split_of(amount: "Fraction") -> int | None:
    """k when `amount` is 1/k of a GPU (or a float's print of it) for k in 2..MAX_SPLIT."""
    from fractions import Fraction

    if not 0 < amount < 1:
        return None
    split = round(1 / amount)
    if 2 <= split <= MAX_SPLIT and abs(amount - Fraction(1, split)) <= Fraction(1, _FLOAT_SLACK_DENOMINATOR):
        return split
    return None


def whole(units: int) -> bool:
    return units % GPU_UNITS == 0


def split_of(units: int) -> int | None:
    """k for a share of 1/k of a GPU; None for whole GPUs (or none)."""
    return None if whole(units) else GPU_UNITS // units


def columns(units: int) -> tuple[int, int | None]:
    """How the queue stores an amount: (GPUs it touches, k of its 1/k share or None)."""
    split = split_of(units)
    return (units // GPU_UNITS, None) if split is None else (1, split)


def from_columns(gpus: int, split: int | None) -> int:
    return gpus * GPU_UNITS if split is None else GPU_UNITS // split


def text(units: int) -> str:
    """As a user writes it: 2, 0.5, 0.25, 1/3."""
    if whole(units):
        return str(units // GPU_UNITS)
    from fractions import Fraction

    share = Fraction(units, GPU_UNITS)
    decimal = float(share)
    return repr(decimal) if Fraction(repr(decimal)) == share else f"1/{share.denominator}"


def value(units: int) -> int | float:
    """For JSON: a whole number, or the share as a float (read back exactly by parse_gpus)."""
    return units // GPU_UNITS if whole(units) else units / GPU_UNITS
