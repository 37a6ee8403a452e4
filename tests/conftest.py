"""Shared fixtures: the synthetic COCO set and helpers to run the project's tools."""
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SYNTHETIC_CONFIG_DIR = osp.join(REPO, 'configs', 'synthetic')


@pytest.fixture(scope='session')
def synthetic_coco(tmp_path_factory):
    """A small synthetic COCO set (64 train / 8 val images of 128 px), made once per session."""
    from mmdet_maxq.datasets import make_synthetic_coco

    root = tmp_path_factory.mktemp('data') / 'synthetic_coco'
    make_synthetic_coco(str(root), num_train=64, num_val=8, seed=0)
    return str(root)


def run_tool(args, cwd=REPO, check=True, env=None, timeout=900):
    """Run ``python <args>`` from the repository root; return the CompletedProcess."""
    full_env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='2')
    full_env.update(env or {})
    proc = subprocess.run([sys.executable] + list(args), cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}'
                             f'\nstderr:\n{proc.stderr[-6000:]}')
    return proc


def data_options(root):
    """``--cfg-options`` that point a synthetic config at ``root``."""
    root = root.rstrip('/') + '/'
    return ['train_dataloader.dataset.data_root=' + root,
            'val_dataloader.dataset.data_root=' + root,
            'test_dataloader.dataset.data_root=' + root,
            'val_evaluator.ann_file=' + root + 'annotations/instances_val.json',
            'test_evaluator.ann_file=' + root + 'annotations/instances_val.json']
