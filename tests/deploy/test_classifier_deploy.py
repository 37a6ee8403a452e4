"""Deploy of a sparse mmpretrain classifier: a plain ImageClassifier that mmpretrain alone runs.

Through the Python API (a plain ``ImageClassifier`` config, the model sparsified with
``sparsify()``) always; through ``tools/deploy.py`` with a ``SparseClassifier`` config when
that type is registered.
"""
import importlib.util
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmdet_maxq.deploy import CLASSIFIER, VerificationError, export_verified, kind_of_model
from mmdet_maxq.models import SparseConv2d, SparsitySettings, sparse_layers, sparsify
from mmdet_maxq.sparsity import is_nm_sparse
from ..conftest import REPO, SINGLE_THREAD, run_tool

mmpretrain = pytest.importorskip('mmpretrain')

NUM_CLASSES = 5
TEST_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=40, edge='short'),
    dict(type='CenterCrop', crop_size=32),
    dict(type='PackInputs'),
]


def classifier_cfg(model_type: str = 'ImageClassifier') -> dict:
    """A tiny ResNet-18 (16 base channels) classifier config; its pipeline only in the
    test dataloader (behind a dataset wrapper), its data root missing: random 32 px images."""
    model = dict(
        type=model_type,
        backbone=dict(type='ResNet', depth=18, stem_channels=16, base_channels=16,
                      out_indices=(3, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=128,
                  loss=dict(type='CrossEntropyLoss')),
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=NUM_CLASSES,
                               mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               to_rgb=True))
    if model_type == 'SparseClassifier':
        model.update(classifier='ImageClassifier', sparsity=dict(method='maxq', n=2, m=8))
    return dict(
        default_scope='mmpretrain',
        custom_imports=dict(imports=['mmdet_maxq'], allow_failed_imports=False),
        custom_hooks=[dict(type='SparsityScheduleHook', kind='cubic', start=0, end=1)],
        model=model,
        test_dataloader=dict(
            batch_size=1, num_workers=0,
            dataset=dict(type='RepeatDataset', times=1, dataset=dict(
                type='CustomDataset', data_root='/nonexistent/imagenet', ann_file='',
                pipeline=TEST_PIPELINE))))


def _sparse_classifier():
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS

    torch.manual_seed(0)
    model = MODELS.build(classifier_cfg()['model'])
    report = sparsify(model, SparsitySettings(method='maxq', n=2, m=8))
    assert report.sparse and all(name.startswith('backbone.') for name in report.sparse)
    return model.eval()


@pytest.fixture(scope='module')
def exported(tmp_path_factory, one_thread):
    model = _sparse_classifier()
    assert kind_of_model(model) is CLASSIFIER
    out = tmp_path_factory.mktemp('cls_deploy') / 'model.pth'
    result = export_verified(model, Config(classifier_cfg()), str(out), num_images=3)
    return model, result


def test_export_passes_the_three_checks(exported):
    _, result = exported
    report = result.report
    assert report.passed and report.kind == 'classifier'
    assert [check.key for check in report.checks] == ['nm', 'load', 'predictions']
    assert report.checks[1].title.startswith('plain mmpretrain builds')
    assert 'ImageClassifier from mmpretrain.registry.MODELS' in report.checks[1].detail
    assert report.image_source == '3 deterministic random 32x32 images (test data root not found)'
    assert len(report.images) == 3 and all(row.labels_equal for row in report.images)


def test_plain_config_is_mmpretrain_only(exported):
    _, result = exported
    cfg = Config.fromfile(result.config)
    assert cfg.model.type == 'ImageClassifier' and 'sparsity' not in cfg.model
    assert 'custom_imports' not in cfg and not cfg.get('custom_hooks')
    assert cfg.test_pipeline == TEST_PIPELINE
    assert 'mmdet_maxq' not in open(result.config).read()


def test_every_eligible_conv_is_exactly_2of8(exported):
    model, result = exported
    state = torch.load(result.checkpoint, map_location='cpu', weights_only=True)
    assert state['meta']['mmpretrain_version'] == mmpretrain.__version__
    weights = state['state_dict']
    assert not [key for key in weights if key.endswith('.mask')]
    assert result.folded == [name for name, _ in sparse_layers(model)]
    assert len(result.folded) == 19  # every backbone conv but the 3-channel stem
    for name in result.folded:
        assert is_nm_sparse(weights[name + '.weight'], 2, 8), name


PLAIN_MMPRETRAIN = """
import sys
sys.modules['mmdet_maxq'] = None  # a server with mmpretrain alone
import torch
from mmpretrain.apis import init_model
config, checkpoint, inputs, result = sys.argv[1:]
model = init_model(config, checkpoint, device='cpu')
with torch.no_grad():
    preds = model(torch.load(inputs), mode='predict')
torch.save(dict(type=type(model).__name__,
                scores=torch.stack([p.pred_score for p in preds]),
                labels=torch.cat([p.pred_label for p in preds])), result)
"""


def test_mmpretrain_alone_predicts_the_same_classes(exported, tmp_path):
    """Independent of the tool's check: mmpretrain's own ``init_model`` in a process where
    mmdet_maxq cannot be imported, against the sparse model, on the same inputs."""
    model, result = exported
    inputs = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.save(inputs, tmp_path / 'inputs.pth')
    run_tool(['-I', '-c', PLAIN_MMPRETRAIN, result.config, result.checkpoint,
              str(tmp_path / 'inputs.pth'), str(tmp_path / 'out.pth')], env=SINGLE_THREAD)
    plain = torch.load(tmp_path / 'out.pth', weights_only=True)
    with torch.no_grad():
        preds = model(inputs, mode='predict')
    scores = torch.stack([p.pred_score for p in preds])
    assert plain['type'] == 'ImageClassifier'
    assert torch.equal(plain['labels'], torch.cat([p.pred_label for p in preds]))
    torch.testing.assert_close(plain['scores'], scores, atol=1e-5, rtol=0)


def _forgot_the_mask(self):
    """A broken fold: the plain conv gets the raw weight, not W * S."""
    conv = torch.nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                           self.padding, self.dilation, self.groups, self.bias is not None)
    conv.weight = torch.nn.Parameter(self.weight.detach().clone())
    return conv


def test_a_broken_classifier_fold_writes_nothing(tmp_path, monkeypatch, one_thread):
    model = _sparse_classifier()
    monkeypatch.setattr(SparseConv2d, 'to_dense', _forgot_the_mask)
    with pytest.raises(VerificationError) as info:
        export_verified(model, Config(classifier_cfg()), str(tmp_path / 'out' / 'model.pth'),
                        num_images=2)
    assert {check.key for check in info.value.report.failures()} == {'nm', 'predictions'}
    assert not (tmp_path / 'out').exists()


def _tool():
    spec = importlib.util.spec_from_file_location('deploy_tool',
                                                  osp.join(REPO, 'tools', 'deploy.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_tool_deploys_a_sparse_classifier_config(tmp_path):
    config = tmp_path / 'sparse_cls.py'
    Config(classifier_cfg('SparseClassifier')).dump(str(config))
    tool = _tool()
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS

    model = MODELS.build(Config.fromfile(str(config)).model)
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), tmp_path / 'trained.pth')
    result = tool.main([str(config), str(tmp_path / 'trained.pth'),
                        str(tmp_path / 'deploy' / 'model.pth'), '--num-images', '2'])
    assert result.report.passed
    assert Config.fromfile(result.config).model.type == 'ImageClassifier'
    assert sorted(os.listdir(tmp_path / 'deploy')) == ['model.pth', 'model.py']


@pytest.mark.cuda
def test_export_on_cuda_compares_on_the_same_device(tmp_path):
    """``--device cuda``: the plain model runs on the GPU too, TF32 off, within the default
    relative tolerance."""
    model = _sparse_classifier().cuda()
    result = export_verified(model, Config(classifier_cfg()), str(tmp_path / 'model.pth'),
                             num_images=2)
    assert result.report.passed
    assert 'on cuda:0' in result.report.checks[1].detail
