"""Deploy of a model with sparse linear layers: a tiny mmpretrain ViT classifier (attention
projections, MLPs and the head sparse) folds into a plain ImageClassifier whose linear weights
are exactly N:M and whose predictions equal the sparse model's."""
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmdet_maxq.deploy import export_verified
from mmdet_maxq.models import SparseLinear, SparsitySettings, sparse_layers, sparsify
from mmdet_maxq.sparsity import nm_figures
from .test_classifier_deploy import NUM_CLASSES, classifier_cfg

pytest.importorskip('mmpretrain')

EMBED = 32


def vit_cfg() -> dict:
    """:func:`classifier_cfg` with a 2-layer ViT (32 channels, 8 px patches of 32 px images)."""
    cfg = classifier_cfg()
    cfg['model'].update(
        backbone=dict(type='VisionTransformer', img_size=32, patch_size=8,
                      arch=dict(embed_dims=EMBED, num_layers=2, num_heads=2,
                                feedforward_channels=2 * EMBED)),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=NUM_CLASSES,
                  in_channels=EMBED, loss=dict(type='CrossEntropyLoss')))
    return cfg


@pytest.fixture(scope='module')
def exported(tmp_path_factory, one_thread):
    from mmpretrain.registry import MODELS

    # The test's scope, restored afterwards (later tests build from other registries).
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        torch.manual_seed(0)
        model = MODELS.build(vit_cfg()['model'])
        report = sparsify(model, SparsitySettings(method='maxq', n=2, m=8,
                                                  layers=['backbone.*', 'head.*']))
        assert report.dense == {'backbone.patch_embed.projection':
                                '3 input channels not divisible by M=8'}
        model.eval()
        out = tmp_path_factory.mktemp('vit_deploy') / 'model.pth'
        result = export_verified(model, Config(vit_cfg()), str(out), num_images=2)
        return model, result


def test_linear_layers_fold_to_exact_nm_and_equal_predictions(exported):
    model, result = exported
    assert result.report.passed, [(c.key, c.detail) for c in result.report.checks]
    layers = dict(sparse_layers(model))
    assert result.folded == list(layers) and len(layers) == 9  # 4 per block, the head
    assert all(isinstance(layer, SparseLinear) for layer in layers.values())
    assert {'backbone.layers.0.attn.qkv', 'backbone.layers.1.attn.proj',
            'backbone.layers.1.ffn.layers.1', 'head.layers.head'} <= set(layers)
    assert [row.name for row in result.report.layers] == result.folded
    assert all(row.compliant and len(row.shape) == 2 for row in result.report.layers)
    state = torch.load(result.checkpoint, map_location='cpu', weights_only=True)['state_dict']
    assert not [key for key in state if key.endswith('.mask')]
    for name, layer in layers.items():
        weight = state[name + '.weight']
        assert weight.shape == layer.weight.shape and weight.dim() == 2, name
        figures = nm_figures(weight, 2, 8)
        assert figures.compliant and figures.sparsity == 0.75, name
        # The folded weight is the sparse model's W * S at preserve 0, bit for bit.
        assert torch.equal(weight, layer.weight.detach() * layer.compute_mask(0.0)), name
    assert [check.key for check in result.report.checks] == ['nm', 'load', 'predictions']
    assert all(row.labels_equal for row in result.report.images)


def test_fold_returns_plain_linear_layers(exported):
    model, _ = exported
    for name, layer in sparse_layers(model):
        plain = layer.to_dense()
        assert type(plain) is nn.Linear and plain.weight.shape == layer.weight.shape, name
        x = torch.randn(3, layer.in_features)
        with torch.no_grad():
            torch.testing.assert_close(plain(x), layer(x), rtol=0, atol=1e-6)
