import pytest

from mmdet_maxq.version_check import SUPPORTED, check_versions


def test_installed_stack_is_supported():
    found = check_versions()
    assert set(found) == set(SUPPORTED)


def test_unsupported_and_missing_versions_are_named():
    with pytest.raises(ImportError) as err:
        check_versions({'mmdet': ('9.0.0', '10.0.0'), 'not-a-real-package-xyz': ('1', '2')})
    message = str(err.value)
    from importlib.metadata import version
    assert f"mmdet {version('mmdet')} is installed, but mmdet-maxq supports 9.0.0 <= mmdet < 10.0.0" in message
    assert 'not-a-real-package-xyz is not installed' in message
    assert 'tools/setup_env.sh' in message
