"""The hog's ledger of its node: the cores, GPUs and memory not taken by its tasks."""

from hog.pilot.resources import NodeResources
from hog.store.claims import ClaimedTask
from hog.store.packing import Resources

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
        self.total = Resources(node.cores, len(node.gpus), node.mem_bytes)
        self._gpu_order = {gpu: index for index, gpu in enumerate(node.gpus)}
        self._cores = node.cores
        self._gpus = list(node.gpus)
        self._mem = node.mem_bytes

    def free(self) -> Resources:
        """Free now; cores below zero while tasks are lent ahead."""
        return Resources(self._cores, len(self._gpus), self._mem)

    def fits(self, task: ClaimedTask, queue_ahead: bool) -> bool:
        """Can `task` be handed over now (`queue_ahead`: it may wait for a slot in the launcher)?"""
        room = self._cores + (QUEUE_AHEAD_PER_CORE * self.total.cores if queue_ahead else 0)
        return task.cores <= room and task.gpus <= len(self._gpus) and task.mem_bytes <= self._mem

    def gpus_for(self, task: ClaimedTask) -> list[str]:
        """The GPUs `take` will give `task`."""
        return self._gpus[: task.gpus]

    def take(self, task: ClaimedTask) -> None:
        """Take what `task` needs, its GPUs those `gpus_for` named."""
        del self._gpus[: task.gpus]
        self._cores -= task.cores
        self._mem -= task.mem_bytes

    def give_back(self, task: ClaimedTask, gpu_ids: list[str]) -> None:
        self._cores += task.cores
        self._gpus.extend(gpu_ids)
        self._gpus.sort(key=self._gpu_order.__getitem__)
        self._mem += task.mem_bytes
