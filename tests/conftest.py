"""Shared fixtures: the synthetic COCO set and helpers to run the project's tools."""
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SYNTHETIC_CONFIG_DIR = osp.join(REPO, 'configs', 'synthetic')


@pytest.fixture(scope='module')
def one_thread():
    """In-process model code on one intra-op thread (restored afterwards): on a shared 2-core
    machine a second OpenMP thread mostly spin-waits for a busy core."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def synthetic_coco(tmp_path_factory):
    """A small synthetic COCO set (64 train / 8 val images of 128 px), made once per session."""
    from mmdet_maxq.datasets import make_synthetic_coco

    root = tmp_path_factory.mktemp('data') / 'synthetic_coco'
    make_synthetic_coco(str(root), num_train=64, num_val=8, seed=0)
    return str(root)


def pytest_collection_modifyitems(config, items):
    """Skip the ``cuda``-marked tests where no CUDA device is available (reported as skipped)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs CUDA (torch.cuda.is_available() is False)')
    for item in items:
        if item.get_closest_marker('cuda') is not None:
            item.add_marker(skip)


def run_tool(args, cwd=REPO, check=True, env=None, timeout=900):
    """Run ``python <args>`` from the repository root; return the CompletedProcess.

    The repository comes first on ``PYTHONPATH``; folders already there are kept after it
    (packages installed with ``pip install --target``, as on the GPU machine of
    ``benchmarks/gpu_suite.sh``). ``env`` overrides both.
    """
    path = os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH', '')) if p)
    full_env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS='2')
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


SHORT_MAXQ_CONFIG = 'configs/synthetic/mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py'
# One thread per tool run: the models are tiny, and on a 2-core machine shared with another job
# a second OpenMP thread makes every parallel op wait for a busy core (tens of times slower).
SINGLE_THREAD = dict(OMP_NUM_THREADS='1')


@pytest.fixture(scope='session')
def short_maxq_run(synthetic_coco, tmp_path_factory):
    """A short MaxQ 2:8 training on the synthetic set, shared by the tool tests.

    Two epochs of 4 iterations (8 training images) with the cubic schedule over epoch 0:
    ``epoch_1.pth`` holds masks at preserve rate 1 (mid-schedule, no block N:M yet),
    ``epoch_2.pth`` at preserve rate 0 (every eligible backbone conv exactly 2:8). The
    validation after epoch 2 logs box and mask AP.

    Returns:
        str: The work dir.
    """
    work = str(tmp_path_factory.mktemp('short_maxq'))
    run_tool(['tools/train.py', SHORT_MAXQ_CONFIG, '--work-dir', work, '--cfg-options',
              'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
              'train_dataloader.dataset.indices=8', 'custom_hooks.0.end=1',
              *data_options(synthetic_coco)], env=SINGLE_THREAD)
    return work
