"""The hog's ledger of its node: the cores, GPUs and memory not taken by its tasks.

GPUs are kept per device in integer units (hog.gpushare.GPU_UNITS each): a whole-GPU task takes
whole devices, a task asking for a share (--gpus 0.5) takes that many units of one device, and
packing.place picks which. A device is never given out past GPU_UNITS, and the books balance
exactly however many tasks come and go.
"""

from collections.abc import Iterable

from hog.gpushare import GPU_UNITS
from hog.pilot.resources import NodeResources
from hog.store.claims import ClaimedTask
from hog.store.packing import Resources, per_device, place

# One-core tasks that may wait for a slot in the launcher's queue, per core: while it holds more
# than one per core, the slots start them without waking the loop.
QUEUE_AHEAD_PER_CORE = 4


class Ledger:
    """What is free, taken when a task is handed to the launcher and given back when it is done.

    A one-core task queued ahead in the launcher takes its core at once, before a slot frees: the
    free cores go below zero by as many tasks as wait there (lent ahead), up to
    QUEUE_AHEAD_PER_CORE per core.
    """

    def __init__(self, node: NodeResources) -> None:
        self.total = Resources(node.cores, len(node.gpus) * GPU_UNITS, node.mem_bytes)
        self.gpu_ids = list(node.gpus)
        self._gpu_index = {gpu: index for index, gpu in enumerate(node.gpus)}
        self._cores = node.cores
        self._rooms = [GPU_UNITS] * len(node.gpus)  # free units of each device
        self._mem = node.mem_bytes

    def free(self) -> Resources:
        """Free now; cores below zero while tasks are lent ahead."""
        return Resources(self._cores, sum(self._rooms), self._mem)

    def devices(self) -> tuple[int, ...]:
        """The free units of each GPU, in the node's order."""
        return tuple(self._rooms)

    def fits(self, task: ClaimedTask, queue_ahead: bool) -> bool:
        """Can `task` be handed over now (`queue_ahead`: it may wait for a slot in the launcher)?"""
        room = self._cores + (QUEUE_AHEAD_PER_CORE * self.total.cores if queue_ahead else 0)
        return (
            task.cores <= room
            and task.mem_bytes <= self._mem
            and (not task.gpus or place(self._rooms, task.gpus) is not None)
        )

    def gpus_for(self, task: ClaimedTask) -> list[str]:
        """The GPUs `take` will give `task` (it fits)."""
        if not task.gpus:
            return []
        placed = place(self._rooms, task.gpus)
        assert placed is not None, f"task {task.task_id} does not fit the free GPUs"
        return [self.gpu_ids[index] for index in placed]

    def take(self, task: ClaimedTask, gpu_ids: list[str]) -> None:
        """Take what `task` needs, on the GPUs `gpus_for` named."""
        if gpu_ids:
            self._move_gpus(task.gpus, gpu_ids, -1)
        self._cores -= task.cores
        self._mem -= task.mem_bytes

    def give_back(self, task: ClaimedTask, gpu_ids: list[str]) -> None:
        if gpu_ids:
            self._move_gpus(task.gpus, gpu_ids, +1)
        self._cores += task.cores
        self._mem += task.mem_bytes

    def _move_gpus(self, units: int, gpu_ids: list[str], sign: int) -> None:
        each = per_device(units, len(gpu_ids))
        for gpu in gpu_ids:
            index = self._gpu_index[gpu]
            room = self._rooms[index] + sign * each
            if not 0 <= room <= GPU_UNITS:
                raise RuntimeError(f"GPU {gpu} would hold {GPU_UNITS - room} of {GPU_UNITS} units")
            self._rooms[index] = room

    def claimable_devices(self, copies: int, held: Iterable[ClaimedTask]) -> tuple[int, ...]:
        """The free units of each GPU for a claim: the node's now, `copies` more of the whole node
        (tasks claimed ahead), less what the `held` tasks (claimed, not started) will take."""
        rooms = self._rooms + [GPU_UNITS] * (len(self._rooms) * copies)
        for task in held:
            placed = place(rooms, task.gpus) if task.gpus else None
            for index in placed or ():
                rooms[index] -= per_device(task.gpus, len(placed))  # type: ignore[arg-type]
        return tuple(rooms)
