"""A task for the shared-GPU tests: `gpu_share_task.py DIR SHARE GROUP COUNT HOLD_S`.

It notes its share on each device it sees (CUDA_VISIBLE_DEVICES), fails if the shares noted on
a device ever pass one GPU (the hog overcommitted it), waits until COUNT tasks of GROUP run at
once (0: none; it fails after a minute: they did not run together), holds on HOLD_S seconds,
and says what it saw in DIR/seen/ID.json.
"""

import json
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

WAIT_S = 60.0


def note(path: Path, text: str) -> None:
    """Written whole or not at all: another task may read it at any moment."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.rename(path)


def device_load(folder: Path) -> Fraction:
    load = Fraction()
    for path in folder.iterdir():
        if path.name.endswith(".partial"):
            continue
        try:
            load += Fraction(path.read_text())
        except FileNotFoundError:
            continue  # its task ended between the listing and the read: it holds nothing now
    return load


def main() -> int:
    root, share, group, count, hold_s = (
        Path(sys.argv[1]),
        sys.argv[2],
        sys.argv[3],
        int(sys.argv[4]),
        float(sys.argv[5]),
    )
    task_id = os.environ["HOG_TASK_ID"]
    devices = [d for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d]
    seen = {
        name: os.environ.get(name)
        for name in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
    }
    per_device = Fraction(1) if Fraction(share) >= 1 else Fraction(share)
    folders = [root / f"device-{device}" for device in devices]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        note(folder / task_id, str(per_device))
    members = root / f"group-{group}"
    members.mkdir(parents=True, exist_ok=True)
    note(members / task_id, "1")
    deadline = time.monotonic() + WAIT_S
    most = 0
    try:
        while True:
            for folder in folders:
                load = device_load(folder)
                if load > 1:
                    print(f"device {folder.name} holds {load} GPUs", file=sys.stderr)
                    return 3
            running = sum(1 for p in members.iterdir() if not p.name.endswith(".partial"))
            most = max(most, running)
            if running >= count:
                break
            if time.monotonic() > deadline:
                print(f"only {running} of {count} tasks of {group} ran at once", file=sys.stderr)
                return 4
            time.sleep(0.05)
        time.sleep(hold_s)
        for folder in folders:
            if device_load(folder) > 1:
                print(f"device {folder.name} overcommitted", file=sys.stderr)
                return 3
    finally:
        for folder in folders:
            (folder / task_id).unlink()
    (root / "seen").mkdir(exist_ok=True)
    note(root / "seen" / f"{task_id}.json", json.dumps({"share": share, "group": group, **seen}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
