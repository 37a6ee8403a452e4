"""Linear layers in the N:M reports: rows, MACs, per-stage and per-block totals of a Swin
backbone (mmdet's SwinTransformer, 32 channels, one block per stage), through the analysis
functions and through tools/sparsity_report.py."""
import importlib.util
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmdet_maxq.analysis import block_totals, layer_macs, report_layers, report_rows, stage_totals
from mmdet_maxq.engine.hooks.sparsity_logger_hook import sparsity_figures
from mmdet_maxq.models import SparseLinear, SparsitySettings, refresh_masks, sparsify
from mmdet_maxq.utils.names import block_prefix, stage_prefix
from ..conftest import REPO

SWIN = dict(type='SwinTransformer', embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
            window_size=4, out_indices=(0, 1, 2, 3))
SIZE = (128, 128)  # 32 x 32 tokens in stage 0: whole windows of 4 at every stage, no padding
S1 = 'backbone.stages.1'


@pytest.mark.parametrize('name, stage, block', [
    ('backbone.layer2.0.downsample.0', 'backbone.layer2', 'backbone.layer2.0'),
    ('backbone.conv1', 'backbone.conv1', 'backbone.conv1'),
    ('neck.lateral_convs.0.conv', 'neck.lateral_convs', 'neck.lateral_convs.0'),
    ('roi_head.bbox_head.shared_fcs.0', 'roi_head.bbox_head', 'roi_head.bbox_head'),
    (S1 + '.blocks.0.attn.w_msa.qkv', S1, S1 + '.blocks.0'),
    (S1 + '.blocks.0.ffn.layers.0.0', S1, S1 + '.blocks.0'),
    (S1 + '.downsample.reduction', S1, S1),
    ('backbone.stages.2.0.pointwise_conv1', 'backbone.stages.2', 'backbone.stages.2.0'),
    ('backbone.layers.3.attn.qkv', 'backbone.layers', 'backbone.layers.3'),
    ('backbone.layers.3.ffn.layers.0.0', 'backbone.layers', 'backbone.layers.3'),
    ('encoder.layers.2.self_attn.value_proj', 'encoder.layers', 'encoder.layers.2'),
])
def test_stage_and_block_of_cnn_and_transformer_names(name, stage, block):
    assert stage_prefix(name) == stage and block_prefix(name) == block


@pytest.fixture(scope='module')
def swin(one_thread):
    from mmdet.registry import MODELS

    torch.manual_seed(0)
    model = nn.Module()
    with DefaultScope.overwrite_default_scope('mmdet'):
        model.backbone = MODELS.build(SWIN)
    report = sparsify(model, SparsitySettings(method='maxq', n=2, m=8))
    assert report.dense == {'backbone.patch_embed.projection':
                            '3 input channels not divisible by M=8'}
    return model.eval()


def test_rows_count_linear_layers_and_their_macs(swin):
    layers = report_layers(swin, 'backbone.')
    macs = layer_macs(swin.backbone, {k[len('backbone.'):]: v for k, v in layers.items()}, SIZE)
    rows = report_rows(layers, 2, 8, {'backbone.' + k: v for k, v in macs.items()})
    by_name = {row.name: row for row in rows}
    linear = [row for row in rows if row.kind == 'linear']
    assert len(linear) == 19 and all(row.sparse and row.compliant for row in linear)
    assert all(isinstance(layers[row.name], SparseLinear) for row in linear)
    # By hand: stage 0 runs on (128 / 4)^2 = 1024 tokens of 32 features.
    qkv = by_name['backbone.stages.0.blocks.0.attn.w_msa.qkv']
    assert qkv.shape == (96, 32) and qkv.macs == 1024 * 32 * 96
    assert qkv.sparse_macs == qkv.macs * 2 / 8 and qkv.nonzero == 96 * 32 // 4
    fc2 = by_name['backbone.stages.2.blocks.0.ffn.layers.1']  # 64 tokens, 512 -> 128
    assert fc2.macs == 64 * 512 * 128
    merge = by_name['backbone.stages.0.downsample.reduction']  # 16 x 16 tokens, 128 -> 64
    assert merge.macs == 256 * 128 * 64
    stem = by_name['backbone.patch_embed.projection']  # a 4x4 stride-4 conv, 3 -> 32
    assert stem.kind == 'conv' and not stem.eligible and not stem.compliant
    assert stem.macs == 32 * 32 * 32 * 3 * 4 * 4 and stem.sparse_macs == stem.macs

    stages = stage_totals(rows)
    assert list(stages) == ['backbone.patch_embed', 'backbone.stages.0', 'backbone.stages.1',
                            'backbone.stages.2', 'backbone.stages.3', 'total']
    assert stages['backbone.stages.0']['linear'] == 5 and stages['backbone.stages.3']['linear'] == 4
    assert stages['total']['macs'] == sum(row.macs for row in rows)
    assert stages['total']['conv'] == 1 and stages['total']['linear'] == 19
    blocks = block_totals(rows)
    block = blocks['backbone.stages.1.blocks.0']
    assert block['layers'] == 4 and block['compliant'] == 4
    assert block['macs'] == sum(row.macs for row in rows if row.block ==
                                'backbone.stages.1.blocks.0')
    assert blocks['backbone.stages.1']['layers'] == 1  # the patch merging, in no block
    assert blocks['total'] == stages['total']


def test_logger_figures_count_sparse_linear_layers_per_stage(swin):
    refresh_masks(swin, 1.0)  # every block exempt: nothing N:M yet, no zeros
    figures = sparsity_figures(swin)
    assert figures['sparsity/nm_blocks'] == 0.0
    refresh_masks(swin, 0.0)
    figures = sparsity_figures(swin)
    # The sparse layers only (the dense patch embedding is not logged), one key per stage.
    assert figures == pytest.approx({'sparsity/nm_blocks': 1.0, 'sparsity/backbone.stages.0': 0.75,
                                     'sparsity/backbone.stages.1': 0.75,
                                     'sparsity/backbone.stages.2': 0.75,
                                     'sparsity/backbone.stages.3': 0.75})


def test_tool_reports_linear_layers_per_stage_and_block(tmp_path, capsys, one_thread):
    """tools/sparsity_report.py on a sparse RetinaNet with the Swin backbone."""
    from mmdet.registry import MODELS

    config = tmp_path / 'retinanet_swin.py'
    base = osp.join(REPO, 'configs/synthetic/retinanet_r18-tiny-maxq-2of8_fpn_synthetic.py')
    config.write_text(
        f"_base_ = {base!r}\n"
        f"model = dict(backbone=dict(_delete_=True, **{SWIN!r}),\n"
        "             neck=dict(in_channels=[32, 64, 128, 256]))\n")
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(Config.fromfile(str(config)).model)
    torch.save(dict(state_dict=model.state_dict(), meta={}), tmp_path / 'model.pth')
    spec = importlib.util.spec_from_file_location(
        'sparsity_report_tool', osp.join(REPO, 'tools', 'sparsity_report.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rows = tool.main([str(config), str(tmp_path / 'model.pth'), '--layers', '--blocks',
                      '--input-size', *map(str, SIZE)])
    out = capsys.readouterr().out
    assert ('19 of 19 N:M-eligible backbone layers are exactly 2:8; dense (ineligible): '
            'backbone.patch_embed.projection') in out, out
    assert sum(row.kind == 'linear' for row in rows) == 19
    cells = [[cell.strip() for cell in line.split('│')[1:-1]] for line in out.splitlines()
             if line.startswith('│')]
    # The stage table: stage 0 has 5 layers, all linear, sparse and exactly N:M (its block
    # and the patch merging after it).
    assert ['backbone.stages.0', '5', '5', '5', '5'] in [row[:5] for row in cells], out
    # The block table: one row per transformer block.
    for i in range(4):
        assert [f'backbone.stages.{i}.blocks.0', '4', '4', '4', '4'] in [
            row[:5] for row in cells], out
    qkv = next(row for row in cells if row[0] == 'backbone.stages.0.blocks.0.attn.w_msa.qkv')
    assert qkv[-2:] == ['linear', f'{1024 * 32 * 96 / 1e6:.3f}']
