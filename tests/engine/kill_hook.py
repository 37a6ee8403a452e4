"""A test-only hook: SIGKILLs the training process right after the checkpoint of one epoch is on
disk, as a preemption would (no clean shutdown, nothing after the checkpoint runs)."""
import os
import os.path as osp
import signal
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillAfterCheckpointHook(Hook):
    """After epoch ``epoch`` (1-based), once ``WORK_DIR/last_checkpoint`` names its checkpoint
    (rank 0 writes it; the other ranks wait for it), kill this process with SIGKILL.

    Args:
        epoch (int): The epoch whose checkpoint is the last one written.
    """

    priority = 'LOWEST'  # after the CheckpointHook ('VERY_LOW') has saved

    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 != self.epoch:
            return
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        wanted = osp.join(runner.work_dir, f'epoch_{self.epoch}.pth')
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if osp.isfile(pointer) and open(pointer).read().strip() == wanted:
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
