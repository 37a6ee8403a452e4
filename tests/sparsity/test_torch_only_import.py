"""``import mmdet_maxq.sparsity`` needs PyTorch alone; ``import mmdet_maxq`` still checks and
registers, and says clearly what is missing (each case in a fresh interpreter)."""
import subprocess
import sys
import textwrap

from ..conftest import REPO

# A meta-path finder that makes the OpenMMLab packages unimportable, as in a plain PyTorch
# environment (their distributions' metadata stays, so only a real import attempt tells).
BLOCK = textwrap.dedent("""
    import sys

    class Blocker:
        BLOCKED = ('mmdet', 'mmengine', 'mmcv', 'mmpretrain')

        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in self.BLOCKED:
                raise ImportError(f'{name} is blocked by the test')
            return None

    sys.meta_path.insert(0, Blocker())
""")


def _python(code):
    return subprocess.run([sys.executable, '-c', BLOCK + textwrap.dedent(code)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={'PYTHONPATH': REPO, 'PATH': '/usr/bin:/bin'})


def test_mask_math_imports_and_runs_without_openmmlab():
    proc = _python("""
        import torch
        import mmdet_maxq.sparsity as sparsity
        from mmdet_maxq.sparsity import maxq_mask, nm_mask

        weight = torch.randn(8, 16, 3, 3)
        mask = nm_mask(weight, 2, 8)
        assert sparsity.is_nm_sparse(weight * mask, 2, 8)
        soft = maxq_mask(weight, 2, 8)
        assert soft.shape == weight.shape
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in Blocker.BLOCKED)
        assert not loaded, loaded
        assert 'mmdet_maxq.models' not in sys.modules
        print('ok')
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'ok'


def test_package_import_without_openmmlab_is_one_clear_error():
    proc = _python('import mmdet_maxq\n')
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('ImportError: mmdet-maxq: cannot import mmengine (mmengine is blocked')
    assert 'tools/setup_env.sh' in last and 'import mmdet_maxq.sparsity' in last


def test_sparsity_import_with_the_stack_registers_everything():
    proc = subprocess.run(
        [sys.executable, '-c', textwrap.dedent("""
            import mmdet_maxq.sparsity
            from mmdet.registry import HOOKS, MODELS
            assert MODELS.get('SparseDetector') is not None
            assert HOOKS.get('RandomStateHook') is not None
            print('ok')
        """)], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={'PYTHONPATH': REPO, 'PATH': '/usr/bin:/bin'})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'ok'


def test_semi_structured_imports_without_openmmlab():
    proc = _python("""
        import torch
        from mmdet_maxq.deploy.semi_structured import (SemiStructuredError, convs_as_linear,
                                                       to_semi_structured)

        model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1))
        assert convs_as_linear(model) == ['0']
        try:
            to_semi_structured(model)
        except SemiStructuredError as err:
            assert 'CUDA' in str(err)
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in Blocker.BLOCKED)
        assert not loaded, loaded
        assert 'mmdet_maxq.deploy.export' not in sys.modules
        assert 'mmdet_maxq.models' not in sys.modules
        print('ok')
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'ok'


def test_deploy_package_without_openmmlab_is_still_one_clear_error():
    proc = _python('import mmdet_maxq.deploy\n')
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('ImportError: mmdet-maxq: cannot import mmengine'), last
