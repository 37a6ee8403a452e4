"""SparseClassifier: mmpretrain classifiers sparsified in place by the SparseDetector mechanism,
and the hand-over of their checkpoint to a SparseDetector's ResNet."""
import pytest
import torch
import torch.nn as nn
from mmdet.registry import MODELS as DET_MODELS
from mmengine.registry import DefaultScope
from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

import mmdet_maxq  # noqa: F401
from mmdet_maxq.models import SparseConv2d, sparse_layers, sparsity_settings
from mmdet_maxq.sparsity import is_nm_sparse


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    """Build from mmpretrain's registries, leaving the default scope as it was afterwards."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


def classifier_cfg(backbone, in_channels, n=2, m=8, method='maxq', num_classes=5):
    return dict(type='SparseClassifier', classifier='ImageClassifier', backbone=backbone,
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=num_classes,
                          in_channels=in_channels,
                          loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1)),
                sparsity=dict(method=method, n=n, m=m))


def resnet(depth, width=16):
    return dict(type='ResNet', depth=depth, base_channels=width, stem_channels=width,
                out_indices=(3, ))


def build(cfg):
    return PRETRAIN_MODELS.build(cfg)


# depth -> (convs of the backbone, all but the stem sparse)
RESNET_CONVS = {18: 20, 34: 36, 50: 53, 101: 104}


@pytest.mark.parametrize('depth', [18, 34, 50, 101])
def test_resnets_are_sparsified_in_place(depth, one_thread):
    expansion = 1 if depth < 50 else 4
    model = build(classifier_cfg(resnet(depth), 16 * 8 * expansion))
    assert type(model).__name__ == 'ImageClassifier'
    settings = sparsity_settings(model)
    assert (settings.method, settings.n, settings.m) == ('maxq', 2, 8)
    convs = {n: c for n, c in model.named_modules() if isinstance(c, nn.Conv2d)}
    assert len(convs) == RESNET_CONVS[depth]
    assert not isinstance(convs['backbone.conv1'], SparseConv2d)  # 3-channel stem: dense
    assert model.sparsify_report.dense == {
        'backbone.conv1': '3 input channels not divisible by M=8'}
    assert isinstance(convs['backbone.layer2.0.downsample.0'], SparseConv2d)
    assert len(sparse_layers(model)) == RESNET_CONVS[depth] - 1
    assert isinstance(model.head.fc, nn.Linear)  # the head stays dense
    # Same keys as the plain classifier: masks follow from the weights.
    plain_cfg = classifier_cfg(resnet(depth), 16 * 8 * expansion)
    for key in ('classifier', 'sparsity'):
        plain_cfg.pop(key)
    plain = build(dict(plain_cfg, type='ImageClassifier'))
    keys, plain_keys = set(model.state_dict()), set(plain.state_dict())
    assert keys == plain_keys


def test_mobilenet_v2_pointwise_sparse_depthwise_dense(one_thread):
    model = build(dict(
        type='SparseClassifier', classifier='ImageClassifier',
        backbone=dict(type='MobileNetV2', widen_factor=0.5),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=1280),
        sparsity=dict(method='maxq', n=2, m=4)))
    convs = {n: c for n, c in model.named_modules() if isinstance(c, nn.Conv2d)}
    depthwise = {n for n, c in convs.items() if c.groups > 1}
    pointwise = {n for n, c in convs.items() if c.kernel_size == (1, 1)}
    assert depthwise and pointwise
    sparse = {n for n, _ in sparse_layers(model)}
    assert sparse == pointwise
    assert not depthwise & sparse
    assert 'backbone.conv1.conv' not in sparse  # stem
    assert all('input channels not divisible' in model.sparsify_report.dense[n]
               for n in depthwise)


def test_one_mechanism_behind_both_names():
    with pytest.raises(ValueError, match=r"model.classifier is missing: name the classifier "
                       r"class, e.g. model=dict\(type='SparseClassifier', "
                       r"classifier='ImageClassifier'"):
        build(dict(type='SparseClassifier', sparsity=dict(n=2, m=8)))
    with pytest.raises(ValueError, match=r'model.detector is missing'), \
            DefaultScope.overwrite_default_scope('mmdet'):
        DET_MODELS.build(dict(type='SparseDetector', sparsity=dict(n=2, m=8)))
    with pytest.raises(ValueError, match=r'model.sparsity: unknown keys \[\'nn\'\]'):
        build(classifier_cfg(resnet(18), 128) | dict(sparsity=dict(nn=2)))


@pytest.mark.parametrize('name', ['SparsityScheduleHook', 'SRSTEDecayHook', 'SparsityLoggerHook',
                                  'RandomStateHook', 'BNRecalibrationHook',
                                  'DenseStartCheckHook'])
def test_hooks_found_by_an_mmpretrain_runner(name):
    hook = PRETRAIN_HOOKS.build(dict(type=name))
    assert type(hook).__name__ == name


def _trained_classifier(method='maxq'):
    """A narrow R-50 classifier at preserve rate 0 after a few steps with BN in train mode."""
    torch.manual_seed(0)
    model = build(classifier_cfg(resnet(50), 512, method=method))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(2):
        images = torch.randn(4, 3, 32, 32)
        loss = model.head.loss(model.extract_feat(images), _samples(4))['loss']
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        model.extract_feat(torch.randn(1, 3, 32, 32))  # masks from the final weights
    return model


def _samples(batch):
    from mmpretrain.structures import DataSample
    return [DataSample().set_gt_label(i % 5) for i in range(batch)]


def _detector_backbone(method):
    with DefaultScope.overwrite_default_scope('mmdet'):
        return _build_detector(method).backbone


def _build_detector(method):
    return DET_MODELS.build(dict(
        type='SparseDetector', detector='FasterRCNN',
        sparsity=dict(method=method, n=2, m=8, layers=['backbone.*']),
        data_preprocessor=dict(type='DetDataPreprocessor'),
        backbone=dict(type='ResNet', depth=50, base_channels=16, frozen_stages=1,
                      norm_eval=True, out_indices=(0, 1, 2, 3), style='pytorch'),
        neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=32, num_outs=5),
        rpn_head=None, roi_head=None, train_cfg=None, test_cfg=None))


@pytest.mark.parametrize('method', ['maxq', 'srste'])
def test_classifier_checkpoint_loads_strictly_and_computes_the_same(method, tmp_path,
                                                                    one_thread):
    classifier = _trained_classifier(method)
    path = tmp_path / 'classifier.pth'
    torch.save({'state_dict': classifier.state_dict()}, path)
    state = torch.load(path, weights_only=True)['state_dict']
    backbone_state = {k[len('backbone.'):]: v for k, v in state.items()
                      if k.startswith('backbone.')}
    backbone = _detector_backbone(method)
    result = backbone.load_state_dict(backbone_state, strict=True)  # raw W and masks
    assert not result.missing_keys and not result.unexpected_keys
    conv = backbone.layer3[0].conv2
    assert not is_nm_sparse(conv.weight, 2, 8)  # raw W, not folded
    backbone.train()  # frozen BN (norm_eval) stays in eval: the first iteration's forward
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = backbone(images)
        classifier.backbone.out_indices = (0, 1, 2, 3)
        theirs = classifier.backbone(images)
    for level, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.equal(a, b), f'stage {level + 1}'
    # The masks those forwards used: N:M, 0/1 for SR-STE, with MaxQ's 1 + F + P on kept weights.
    assert is_nm_sparse(conv.weight * conv.mask, 2, 8)
    assert bool(conv.mask.le(1).all()) == (method == 'srste')
