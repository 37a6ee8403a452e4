"""Train a detector (MMDetection's ``tools/train.py``, with mmdet-maxq registered).

Same flags as MMDetection's: ``--work-dir``, ``--amp``, ``--auto-scale-lr``, ``--resume``,
``--cfg-options``, ``--launcher``. Bad paths stop with one line naming the path and the fix.
"""
import argparse
import os

from mmdet.utils import setup_cache_size_limit_of_dynamo
from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmdet_maxq  # noqa: F401  registers the wrapper and hooks, fixes checkpoint loading
from mmdet_maxq.cli import CliError
from mmdet_maxq.cli import build_config as shared_build_config
from mmdet_maxq.cli import (check_checkpoint_file, check_data_roots, check_pretrained_checkpoints,
                            resolve_resume, setup_cpu_distributed, teardown_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='enable automatically scaling LR')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or without a path from the latest '
                        'checkpoint in the work directory')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs (e.g. '
                        'train_cfg.max_epochs=2 model.sparsity.m=8)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args):
    """The config after the command-line overrides, checked for missing or unusable paths."""
    cfg = shared_build_config(args)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if not ('auto_scale_lr' in cfg and 'base_batch_size' in cfg.auto_scale_lr):
            raise CliError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config '
                           '(MMDetection configs set it in default_runtime)')
        cfg.auto_scale_lr.enable = True
    if args.resume is not None:
        cfg.resume = True
        cfg.load_from = resolve_resume(cfg, args.resume)  # None: no last_checkpoint, a new run
    elif cfg.get('load_from'):
        check_checkpoint_file(cfg.load_from)
    check_pretrained_checkpoints(cfg)
    loaders = ['train_dataloader'] + (['val_dataloader'] if cfg.get('val_cfg') else [])
    check_data_roots(cfg, loaders)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    setup_cache_size_limit_of_dynamo()
    cfg = build_config(args)
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    teardown_distributed()


if __name__ == '__main__':
    main()
