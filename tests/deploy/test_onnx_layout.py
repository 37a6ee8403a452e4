"""The N:M check of tools/misc/onnx_nm_check.py on 2-D weights: ``Gemm`` and ``MatMul`` store a
linear weight as ``(out, in)`` or transposed, and the blocks run along the input features.

The layout rule runs everywhere; the export of a folded model with sparse linear layers needs
ONNX (not part of the project's set-up, see docs/deploy.md) and is skipped without it."""
import importlib.util
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn as nn

from mmdet_maxq.deploy import fold_sparse_model
from mmdet_maxq.models import SparsitySettings, sparsify
from ..conftest import REPO

spec = importlib.util.spec_from_file_location(
    'onnx_nm_check', osp.join(REPO, 'tools', 'misc', 'onnx_nm_check.py'))
TOOL = importlib.util.module_from_spec(spec)
spec.loader.exec_module(TOOL)


def _linear_2of8() -> np.ndarray:
    weight = np.zeros((4, 16), dtype=np.float32)  # (out, in)
    weight[:, 0:2] = 1.0  # 2 of the first 8 inputs
    weight[:, 8] = -1.0  # 1 of the next 8
    return weight


def test_linear_weights_are_checked_along_their_input_features():
    weight = _linear_2of8()
    stored = weight.T.copy()  # how MatMul (and Gemm with transB=0) hold it: (in, out)
    assert TOOL._is_nm(weight, 2, 8)
    assert not TOOL._is_nm(stored, 2, 8)  # the stored axis is not the block axis
    for op_type, raw, trans_b in (('MatMul', stored, 0), ('Gemm', stored, 0),
                                  ('Gemm', weight, 1)):
        out_in = TOOL.out_in_layout(op_type, raw, trans_b)
        assert out_in.shape == (4, 16) and np.array_equal(out_in, weight), op_type
        assert TOOL._is_nm(out_in, 2, 8)
    conv = np.zeros((4, 16, 3, 3), dtype=np.float32)
    assert TOOL.out_in_layout('Conv', conv) is conv
    for op_type, raw in (('Conv', np.zeros((4, 16, 3), np.float32)),  # Conv1d
                         ('MatMul', np.zeros((2, 16, 4), np.float32)),  # batched operand
                         ('Add', weight)):
        assert TOOL.out_in_layout(op_type, raw) is None, op_type


class TwoLinear(nn.Module):

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize('tokens', [False, True])  # a 2-D input exports Gemm, a 3-D MatMul
def test_folded_linear_layers_stay_nm_in_the_onnx_graph(tmp_path, tokens):
    pytest.importorskip('onnx')
    torch.manual_seed(0)
    model = TwoLinear()
    sparsify(model, SparsitySettings(method='maxq', n=2, m=8, layers=['fc*']))
    plain, folded, _ = fold_sparse_model(model.eval())
    assert folded == ['fc1', 'fc2']
    path = str(tmp_path / 'mlp.onnx')
    x = torch.randn((1, 5, 16) if tokens else (1, 16))
    torch.onnx.export(plain, (x, ), path, opset_version=11, dynamo=False)
    state = plain.state_dict()
    result = TOOL.check_onnx_layers(path, state, folded, 2, 8)
    assert result['failed'] == [] and result['kept'] == 2 and result['layers'] == 2
    # Checked at 1:8 the 2:8 weights fail; a folded zero the graph does not keep fails.
    assert TOOL.check_onnx_layers(path, state, folded, 1, 8)['failed'] == ['fc1', 'fc2']
    state = dict(state, **{'fc1.weight': torch.zeros(32, 16)})
    assert TOOL.check_onnx_layers(path, state, folded, 2, 8)['failed'] == ['fc1']
