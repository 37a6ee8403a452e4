"""A test-only hook: saves each rank's masks of the last iteration's forward (computed by each
rank from its own weights: DDP does not broadcast buffers)."""
import os.path as osp

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdet_maxq.models import sparse_layers


@HOOKS.register_module()
class DumpMasksHook(Hook):
    priority = 'LOW'

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 != runner.max_iters:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        masks = {name: conv.mask.clone() for name, conv in sparse_layers(model)}
        torch.save(dict(masks=masks, iter=runner.iter, world_size=runner.world_size),
                   osp.join(self.out_dir, f'masks_rank{runner.rank}.pth'))
