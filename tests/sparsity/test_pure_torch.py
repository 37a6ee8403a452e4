import ast
import pathlib

import mmdet_maxq.sparsity as sparsity
from mmdet_maxq.stack import OPENMMLAB


def test_sparsity_layer_imports_no_openmmlab():
    for path in pathlib.Path(sparsity.__file__).parent.glob('*.py'):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split('.')[0] not in OPENMMLAB, (path, name)
