"""Test (and evaluate) a detector (MMDetection's ``tools/test.py``, with mmdet-maxq registered).

Same flags as MMDetection's: ``--work-dir``, ``--out``, ``--show``, ``--show-dir``,
``--wait-time``, ``--cfg-options``, ``--launcher``, ``--tta``. Bad paths stop with one line
naming the path and the fix.
"""
import argparse
import os
import warnings
from copy import deepcopy

from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet.evaluation import DumpDetResults
from mmdet.registry import RUNNERS
from mmdet.utils import setup_cache_size_limit_of_dynamo
from mmengine import ConfigDict
from mmengine.config import DictAction
from mmengine.runner import Runner

import mmdet_maxq  # noqa: F401  registers the wrapper and hooks, fixes checkpoint loading
from mmdet_maxq.cli import CliError
from mmdet_maxq.cli import build_config as shared_build_config
from mmdet_maxq.cli import (check_checkpoint_file, check_data_roots, setup_cpu_distributed,
                            teardown_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='MMDet test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', type=str,
                        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory where painted images are saved '
                        '(under work_dir/timestamp/)')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _add_tta(cfg):
    if 'tta_model' not in cfg:
        warnings.warn('Cannot find ``tta_model`` in config, we will set it as default.')
        cfg.tta_model = dict(type='DetTTAModel',
                             tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                                          max_per_img=100))
    if 'tta_pipeline' not in cfg:
        warnings.warn('Cannot find ``tta_pipeline`` in config, we will set it as default.')
        test_data_cfg = cfg.test_dataloader.dataset
        while 'dataset' in test_data_cfg:
            test_data_cfg = test_data_cfg['dataset']
        cfg.tta_pipeline = deepcopy(test_data_cfg.pipeline)
        cfg.tta_pipeline[-1] = dict(
            type='TestTimeAug',
            transforms=[[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                        [dict(type='PackDetInputs',
                              meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                         'scale_factor', 'flip', 'flip_direction'))]])
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def build_config(args):
    """The config after the command-line overrides, checked for missing paths."""
    cfg = shared_build_config(args)
    check_checkpoint_file(args.checkpoint)
    cfg.load_from = args.checkpoint
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise CliError(f'--out {args.out!r} must end with .pkl or .pickle')
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.tta:
        _add_tta(cfg)
    check_data_roots(cfg, ['test_dataloader'])
    return cfg


def main(argv=None):
    args = parse_args(argv)
    setup_cache_size_limit_of_dynamo()
    cfg = build_config(args)
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out is not None:
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    metrics = runner.test()
    teardown_distributed()
    return metrics


if __name__ == '__main__':
    main()
