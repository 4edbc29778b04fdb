"""Task id lists as users type them: `7`, `3-9`, `1,4,10-12`."""

from hog.errors import UsageError

MAX_RANGE = 10_000_000
MAX_ID = (1 << 63) - 1  # sqlite's largest integer


def parse_ids(words: tuple[str, ...] | list[str], what: str = "task id") -> list[int]:
    """Ids in the order given, without repeats; raise UsageError naming the bad word (a `what`)."""
    seen: dict[int, None] = {}
    for word in words:
        for part in word.split(","):
            part = part.strip()
            if not part:
                continue
            first, dash, last = part.partition("-")
            try:
                low = int(first)
                high = int(last) if dash else low
            except ValueError:
                raise UsageError(
                    f"bad {what} {part!r}: use numbers like 7, ranges like 3-9, or lists like 1,4"
                ) from None
            if low < 1:
                raise UsageError(f"bad {what} {part!r}: ids start at 1")
            if high > MAX_ID:
                raise UsageError(f"bad {what} {part!r}: no id is larger than {MAX_ID}")
            if high < low:
                raise UsageError(f"bad {what} range {part!r}: a range goes from low to high, like 3-9")
            if high - low >= MAX_RANGE:
                raise UsageError(
                    f"bad {what} range {part!r}: it spans {high - low + 1:,} ids, more than {MAX_RANGE:,}; "
                    "use --all or --state where the command has them, or several smaller ranges"
                )
            for task_id in range(low, high + 1):
                seen[task_id] = None
    return list(seen)
