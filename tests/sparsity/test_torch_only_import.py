"""``import mmdet_maxq.sparsity`` needs PyTorch alone; without the whole OpenMMLab stack the
package registers nothing, and its other subpackages raise one clear ImportError (each case in
a fresh interpreter)."""
import subprocess
import sys
import textwrap

import pytest

from mmdet_maxq.stack import OPENMMLAB, missing_openmmlab
from ..conftest import REPO

# A meta-path finder that makes packages unimportable, as if they were not installed (their
# distributions' metadata stays, so only an import attempt or find_spec tells).
BLOCK = textwrap.dedent("""
    import sys

    class Blocker:
        def __init__(self, names):
            self.names = names

        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in self.names:
                raise ModuleNotFoundError(f'{name} is blocked by the test', name=name)
            return None

    sys.meta_path.insert(0, Blocker(BLOCKED))
""")

# Imports the package and its mask math, computes a mask, then tries every subpackage that
# needs the stack; prints what happened, one fact per line.
PROBE = textwrap.dedent("""
    import importlib
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        import mmdet_maxq
        from mmdet_maxq.sparsity import is_nm_sparse, maxq_mask, nm_mask
    for warning in seen:
        print('warning:', warning.message)
    weight = torch.randn(8, 16, 3, 3)
    assert is_nm_sparse(weight * nm_mask(weight, 2, 8), 2, 8)
    assert maxq_mask(weight, 2, 8).shape == weight.shape
    print('masks: ok')
    for sub in ('models', 'engine', 'deploy', 'checkpoint', 'analysis'):
        try:
            importlib.import_module('mmdet_maxq.' + sub)
        except ImportError as err:
            print(f'{sub}: {type(err).__name__}: {err}')
        else:
            print(f'{sub}: imported')
    loaded = sorted({m.split('.')[0] for m in sys.modules} & {'mmengine', 'mmcv', 'mmdet',
                                                               'mmpretrain'})
    print('openmmlab loaded:', loaded)
""")


def _python(code, blocked=()):
    blocker = f'BLOCKED = {tuple(blocked)!r}\n' + BLOCK
    return subprocess.run([sys.executable, '-c', blocker + code],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={'PYTHONPATH': REPO, 'PATH': '/usr/bin:/bin',
                               'OMP_NUM_THREADS': '1'})


def _probe(blocked):
    proc = _python(PROBE, blocked)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    return [line for line in lines if line.startswith('warning:')], dict(
        line.split(': ', 1) for line in lines if not line.startswith('warning:'))


def _stack_error(missing):
    return ('ImportError: mmdet-maxq: everything but mmdet_maxq.sparsity needs MMEngine, mmcv, '
            f'MMDetection and mmpretrain, but cannot import {missing}. To fix it, run '
            '`bash tools/setup_env.sh` (or `make setup`); the mask math alone, '
            '`mmdet_maxq.sparsity`, needs PyTorch only')


def test_pytorch_alone_imports_the_mask_math_silently():
    warnings, facts = _probe(OPENMMLAB)
    assert not warnings  # the torch-only use is intended: nothing to warn about
    assert facts['masks'] == 'ok' and facts['openmmlab loaded'] == '[]'
    missing = ', '.join(f'{name} ({name} is blocked by the test)' for name in OPENMMLAB)
    for sub in ('models', 'engine', 'deploy', 'checkpoint', 'analysis'):
        assert facts[sub] == _stack_error(missing)


@pytest.mark.parametrize('absent', OPENMMLAB)
def test_one_missing_package_warns_and_every_subpackage_names_it(absent):
    warnings, facts = _probe([absent])
    reason = f'{absent} ({absent} is blocked by the test)'
    assert warnings == [f'warning: mmdet-maxq: cannot import {reason}, so the sparse models '
                        'and hooks are not registered. To fix it, run `bash tools/setup_env.sh` '
                        '(or `make setup`); the mask math alone, `mmdet_maxq.sparsity`, needs '
                        'PyTorch only']
    assert facts['masks'] == 'ok'
    assert facts['openmmlab loaded'] == '[]'  # the packages that are there stay unimported
    for sub in ('models', 'engine', 'deploy', 'checkpoint', 'analysis'):
        assert facts[sub] == _stack_error(reason)


def test_sparsity_import_with_the_stack_registers_everything():
    proc = _python(textwrap.dedent("""
        import warnings

        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter('always')
            import mmdet_maxq.sparsity
        assert not [w for w in seen if str(w.message).startswith('mmdet-maxq')], seen
        from mmdet.registry import HOOKS, MODELS
        from mmpretrain.registry import MODELS as PRETRAIN_MODELS
        assert MODELS.get('SparseDetector') is not None
        assert PRETRAIN_MODELS.get('SparseClassifier') is not None
        assert HOOKS.get('RandomStateHook') is not None
        print('ok')
    """))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'ok'


def test_an_uninstalled_package_is_named_without_importing_anything(monkeypatch):
    assert missing_openmmlab() == []
    monkeypatch.setitem(sys.modules, 'mmcv', None)  # what the import system reads as absent
    assert missing_openmmlab() == ['mmcv (not found)']


def test_the_2to4_speed_path_imports_with_pytorch_alone():
    proc = _python(textwrap.dedent("""
        import torch
        from mmdet_maxq.sparsity.semi_structured import (SemiStructuredError, convs_as_linear,
                                                         to_semi_structured)

        model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1))
        assert convs_as_linear(model) == ['0']
        try:
            to_semi_structured(model)
        except SemiStructuredError as err:
            assert 'CUDA' in str(err), err
        else:
            raise AssertionError('to_semi_structured ran on the CPU')
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
        assert not loaded, loaded
        print('ok')
    """), OPENMMLAB)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'ok'
