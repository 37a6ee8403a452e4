"""The supported versions have one home (setup.cfg's install_requires), and the import-time
check covers whatever it lists."""
import ast
import configparser
import os.path as osp
import pathlib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from mmdet_maxq.stack import OPENMMLAB
from mmdet_maxq.version_check import (SOURCE_SETUP_CFG, check_versions, declared_requirements,
                                      requirements_from_setup_cfg)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_installed_stack_is_supported():
    found = check_versions()
    assert {'torch', *OPENMMLAB} <= set(found)


def test_the_stack_the_package_needs_is_declared():
    declared = {Requirement(line).name for line in declared_requirements()}
    assert set(OPENMMLAB) <= declared  # so the version check covers all of it


def test_the_check_reads_this_checkout_setup_cfg():
    assert SOURCE_SETUP_CFG == osp.join(REPO, 'setup.cfg')
    declared = declared_requirements()
    assert 'mmdet>=3.0.0,<3.4.0' in declared and 'torch>=2.0,<3.0' in declared
    assert not any(line.startswith('#') for line in declared)  # comments dropped


def test_a_line_added_to_install_requires_is_checked(tmp_path):
    setup_cfg = tmp_path / 'setup.cfg'
    text = pathlib.Path(REPO, 'setup.cfg').read_text()
    setup_cfg.write_text(text.replace('install_requires =\n',
                                      'install_requires =\n    mmpretrain>=9.0.0,<9.1.0\n'))
    with pytest.raises(ImportError) as err:
        check_versions(requirements_from_setup_cfg(str(setup_cfg)))
    installed = metadata.version('mmpretrain')
    assert (f'mmpretrain {installed} is installed, but mmdet-maxq requires mmpretrain '
            '<9.1.0,>=9.0.0') in str(err.value)
    supported = text.replace('install_requires =\n',
                             'install_requires =\n    mmpretrain>=1.2.0,<1.3.0\n')
    setup_cfg.write_text(supported)
    assert 'mmpretrain' in check_versions(requirements_from_setup_cfg(str(setup_cfg)))


def test_unsupported_and_missing_versions_are_named():
    with pytest.raises(ImportError) as err:
        check_versions(['mmdet>=9.0.0,<10.0.0', 'not-a-real-package-xyz>=1,<2'])
    message = str(err.value)
    assert (f"mmdet {metadata.version('mmdet')} is installed, but mmdet-maxq requires mmdet "
            '<10.0.0,>=9.0.0') in message
    assert 'not-a-real-package-xyz is not installed (mmdet-maxq requires' in message
    assert 'tools/setup_env.sh' in message and '\n' not in message


def test_local_build_tags_and_extras_do_not_count():
    torch_version = metadata.version('torch')
    check_versions([f'torch=={torch_version.split("+")[0]}'])  # 2.13.0+cpu is 2.13.0
    check_versions(['not-a-real-package-xyz>=1; extra == "tests"'])


def test_without_a_source_checkout_the_installed_metadata_is_read(tmp_path):
    missing = str(tmp_path / 'setup.cfg')
    try:
        requires = metadata.requires('mmdet-maxq')
    except metadata.PackageNotFoundError:
        with pytest.raises(ImportError, match=r'neither installed .* nor run from a source '
                           r'checkout .*pip install -e \.'):
            declared_requirements(missing)
    else:
        assert declared_requirements(missing) == list(requires or [])


def test_a_setup_cfg_without_install_requires_is_refused(tmp_path):
    broken = tmp_path / 'setup.cfg'
    broken.write_text('[metadata]\nname = mmdet-maxq\n')
    with pytest.raises(ImportError, match='has no \\[options\\] install_requires'):
        declared_requirements(str(broken))


def test_another_projects_setup_cfg_is_not_read(tmp_path):
    other = tmp_path / 'setup.cfg'
    other.write_text('[metadata]\nname = other\n[options]\ninstall_requires =\n    nope>=99\n')
    assert 'nope>=99' not in declared_requirements(str(other))


def test_declared_python_version_is_true():
    """Every source file parses as the oldest declared Python; the 3.9 need is known."""
    parser = configparser.ConfigParser()
    parser.read(osp.join(REPO, 'setup.cfg'))
    spec = SpecifierSet(parser.get('options', 'python_requires'))
    major, minor = min((3, minor) for minor in range(6, 20) if f'3.{minor}' in spec)
    assert (major, minor) == (3, 9)  # argparse.BooleanOptionalAction (convert_checkpoint.py)
    for folder in ('mmdet_maxq', 'tools', 'benchmarks', 'configs'):
        for path in pathlib.Path(REPO, folder).rglob('*.py'):
            ast.parse(path.read_text(), str(path), feature_version=(major, minor))
    assert 'BooleanOptionalAction' in pathlib.Path(REPO, 'tools/convert_checkpoint.py').read_text()
