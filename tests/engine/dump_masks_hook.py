"""A test-only hook: saves each rank's freshly computed masks before the last iteration's
forward (so DDP's buffer broadcast cannot make them equal)."""
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS


@HOOKS.register_module()
class DumpMasksHook(Hook):
    priority = 'LOW'  # after SparsityScheduleHook (ABOVE_NORMAL) refreshed the masks

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 != runner.max_iters:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        masks = {name: conv.mask.clone() for name, conv in model.named_sparse_layers()}
        torch.save(dict(masks=masks, iter=runner.iter, world_size=runner.world_size),
                   osp.join(self.out_dir, f'masks_rank{runner.rank}.pth'))
