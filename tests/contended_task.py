"""A task whose speed depends on how many tasks share its GPU, for `tune`'s tests:
`contended_task.py DIR WORK_S SLOWDOWN...`.

It does WORK_S seconds of work alone; with n tasks on its device (CUDA_VISIBLE_DEVICES) it
works at 1/SLOWDOWN[n-1] of that speed (the last factor for more). So the best number of tasks
per GPU is known: n / SLOWDOWN[n-1] is each device's throughput.
"""

import os
import sys
import time
from pathlib import Path

TICK_S = 0.02


def main() -> int:
    root, work_s = Path(sys.argv[1]), float(sys.argv[2])
    slowdowns = [float(word) for word in sys.argv[3:]]
    device = os.environ["CUDA_VISIBLE_DEVICES"]
    folder = root / f"device-{device}"
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / os.environ["HOG_TASK_ID"]
    marker.touch()
    try:
        done = 0.0
        while done < work_s:
            sharing = sum(1 for _ in folder.iterdir())
            time.sleep(TICK_S)
            done += TICK_S / slowdowns[min(sharing, len(slowdowns)) - 1]
    finally:
        marker.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
