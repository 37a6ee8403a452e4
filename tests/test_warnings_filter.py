"""The tools' output no longer opens with pkg_resources deprecation warnings."""
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = 'configs/synthetic/mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py'

# Importing the stack, then loading a config with an ``mmdet::`` base: that is when MMEngine
# imports and reloads pkg_resources (three warnings without the filter).
SCRIPT = f'''
import warnings
{{install}}
import mmengine, mmcv, mmdet.apis
from mmengine.config import Config
Config.fromfile({CONFIG!r})
warnings.warn('an unrelated warning', UserWarning)
'''
INSTALL = 'import mmdet_maxq.utils.warnings_filter as w; w.silence_known_warnings()'


def run(install: str) -> str:
    proc = subprocess.run([sys.executable, '-c', SCRIPT.format(install=install)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env=dict(__import__('os').environ, PYTHONPATH=REPO,
                                   OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def test_pkg_resources_warnings_silenced_others_kept():
    stderr = run(INSTALL)
    assert 'pkg_resources' not in stderr, stderr
    assert 'UserWarning: an unrelated warning' in stderr


def test_without_the_filter_the_warnings_show():
    """The filter is what removes them (guards against the test passing vacuously)."""
    stderr = run('')
    assert stderr.count('pkg_resources is deprecated') >= 1
    assert 'UserWarning: an unrelated warning' in stderr


def test_filter_is_narrow():
    import warnings

    from mmdet_maxq.utils.warnings_filter import silence_known_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        silence_known_warnings()
        silence_known_warnings()  # idempotent
        assert len([f for f in warnings.filters if 'pkg_resources' in str(f[1])]) == 2
        # the same text raised for another module, and another pkg_resources warning, still show
        warnings.warn_explicit('pkg_resources is deprecated as an API. x', UserWarning,
                               'other.py', 1, module='otherpkg')
        warnings.warn_explicit('Deprecated call to `pkg_resources.declare_namespace`',
                               DeprecationWarning, 'x.py', 1, module='mmengine.utils')
        warnings.warn_explicit('pkg_resources is deprecated as an API. x', UserWarning,
                               'package_utils.py', 17, module='mmengine.utils.package_utils')
    assert [str(w.message)[:20] for w in caught] == ['pkg_resources is dep', 'Deprecated call to `']
