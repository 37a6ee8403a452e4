"""Unit tests of the deploy checks: the relative tolerance, the self-contained plain config."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmdet_maxq.deploy import DeployError, check_nm_layers, compare_one, plain_config
from mmdet_maxq.deploy.plain_process import exact_float32
from mmdet_maxq.utils.config_utils import find_test_pipeline, model_config, pipeline_test_scale
from ..conftest import REPO, SHORT_MAXQ_CONFIG

MAXQ = osp.join(REPO, SHORT_MAXQ_CONFIG)


def _detections(scale: float):
    generator = torch.Generator().manual_seed(0)
    boxes = torch.rand(20, 4, generator=generator) * scale
    boxes[:, 2:] += boxes[:, :2]  # x2 > x1, y2 > y1; coordinates up to 2 * scale
    scores = torch.rand(20, generator=generator)
    labels = torch.randint(0, 3, (20, ), generator=generator)
    feats = [torch.randn(1, 8, 4, 4, generator=generator) * 30]
    return dict(bboxes=boxes, scores=scores, labels=labels), feats


def _shifted(pred, **changes):
    out = dict(pred)
    out.update(changes)
    return out


def test_float32_rounding_of_large_boxes_passes():
    """Boxes of ~1500 px: one float32 step there is 1.2e-4 px, beyond an absolute 1e-4."""
    ref, feats = _detections(750.0)
    assert float(ref['bboxes'].max()) > 1024
    rounded = torch.nextafter(ref['bboxes'], torch.full_like(ref['bboxes'], float('inf')))
    step = float((rounded - ref['bboxes']).max())
    assert step > 1e-4, 'the difference must exceed the old absolute tolerance'
    row = compare_one('big', ref, _shifted(ref, bboxes=rounded), feats,
                      [f.clone() for f in feats], tol=1e-4)
    assert row.passed and 0 < row.box_diff <= 1e-4


@pytest.mark.parametrize('change', ['box', 'score', 'label', 'feature', 'count'])
def test_a_real_prediction_difference_fails(change):
    ref, feats = _detections(750.0)
    out, out_feats = dict(ref), [f.clone() for f in feats]
    if change == 'box':  # half a pixel on one coordinate of a 1500 px image
        out['bboxes'] = ref['bboxes'].clone()
        out['bboxes'][3, 1] += 0.5
    elif change == 'score':
        out['scores'] = ref['scores'].clone()
        out['scores'][0] += 1e-3
    elif change == 'label':
        out['labels'] = ref['labels'].clone()
        out['labels'][5] = (out['labels'][5] + 1) % 3
    elif change == 'feature':
        out_feats[0][0, 0, 0, 0] += 0.1
    else:
        out = {key: value[:-1] for key, value in ref.items()}
    row = compare_one('img', ref, out, feats, out_feats, tol=1e-4)
    assert not row.passed


def test_small_boxes_keep_an_absolute_floor():
    """Below 1 px magnitude the tolerance does not shrink under tol itself."""
    ref, feats = _detections(0.2)
    out = _shifted(ref, bboxes=ref['bboxes'] + 5e-5)
    assert compare_one('small', ref, out, feats, feats, tol=1e-4).passed
    out = _shifted(ref, bboxes=ref['bboxes'] + 5e-4)
    assert not compare_one('small', ref, out, feats, feats, tol=1e-4).passed


def test_classifier_predictions_compare_scores_and_class():
    scores = torch.softmax(torch.randn(10, generator=torch.Generator().manual_seed(1)), 0)
    ref = dict(scores=scores, labels=scores.argmax().reshape(1))
    feats = [torch.randn(1, 16)]
    row = compare_one('cls', ref, dict(scores=scores + 1e-6, labels=ref['labels']), feats, feats)
    assert row.passed and row.box_diff == 0.0 and row.detections == 1
    other = dict(scores=scores, labels=(ref['labels'] + 1) % 10)
    assert not compare_one('cls', ref, other, feats, feats).passed
    assert not compare_one('cls', ref, dict(ref, bboxes=torch.zeros(1, 4)), feats, feats).passed


def test_exact_float32_turns_tf32_off_and_restores():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.allow_tf32 = True
    try:
        with exact_float32():
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
            assert torch.backends.cudnn.deterministic
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _pipeline_only_in_a_wrapped_dataloader():
    cfg = Config.fromfile(MAXQ)
    pipeline = cfg.test_dataloader.dataset.pipeline
    data = cfg.to_dict()
    data.pop('test_pipeline', None)
    data['test_dataloader']['dataset'] = dict(
        type='ConcatDataset', datasets=[dict(type='RepeatDataset', times=2,
                                             dataset=data['test_dataloader']['dataset'])])
    return Config(data), pipeline


def test_plain_config_always_writes_a_top_level_test_pipeline(tmp_path):
    cfg, pipeline = _pipeline_only_in_a_wrapped_dataloader()
    assert 'test_pipeline' not in cfg
    assert find_test_pipeline(cfg) == pipeline
    assert pipeline_test_scale(cfg) == (128, 128)
    path = str(tmp_path / 'plain.py')
    plain_config(cfg).dump(path)
    written = Config.fromfile(path)
    assert written.model.type == 'MaskRCNN'
    assert written.test_pipeline == pipeline
    assert [step['type'] for step in written.test_pipeline][0] == 'LoadImageFromFile'


def test_a_config_without_test_pipeline_is_refused():
    cfg, _ = _pipeline_only_in_a_wrapped_dataloader()
    data = cfg.to_dict()
    data.pop('test_dataloader')
    with pytest.raises(DeployError, match='no test pipeline'):
        plain_config(Config(data))


def test_classifier_test_scale_follows_the_center_crop():
    cfg = Config(dict(test_dataloader=dict(dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'), dict(type='ResizeEdge', scale=40, edge='short'),
        dict(type='CenterCrop', crop_size=32), dict(type='PackInputs')]))))
    assert pipeline_test_scale(cfg) == (32, 32)


def test_nm_check_of_folded_conv_and_linear_weights():
    """Check (a) measures 4-D conv and 2-D linear weights, blocks along the input axis."""
    conv = torch.zeros(4, 8, 3, 3)
    conv[:, :2] = 1.0  # 2 of the 8 input channels
    linear = torch.zeros(4, 16)
    linear[:, ::8] = 1.0  # 1 of every 8 input features
    linear[0, 1] = 2.0  # 2 in the first block: still 2:8
    across = torch.zeros(8, 16)
    across[:3, 0] = 1.0  # 3 non-zeros down one input column: 2:8 along the inputs
    state = {'conv.weight': conv, 'fc.weight': linear, 'across.weight': across,
             'dense.weight': torch.ones(4, 16), 'stem.weight': torch.ones(4, 3),
             'masked.weight': linear, 'masked.mask': torch.ones(4, 16),
             'bias_only.bias': torch.ones(4)}
    names = ['conv', 'fc', 'across', 'dense', 'stem', 'masked', 'bias_only', 'missing']
    rows = check_nm_layers(state, names, 2, 8)
    assert [row.name for row in rows] == names
    assert [row.compliant for row in rows] == [True, True, True] + [False] * 5
    assert rows[1].shape == (4, 16) and rows[1].sparsity == pytest.approx(1 - 9 / 64)
    assert rows[0].shape == (4, 8, 3, 3) and rows[0].sparsity == pytest.approx(0.75)
    # The transpose of a compliant linear weight is not N:M along its own input axis.
    assert not check_nm_layers({'t.weight': across.t().contiguous()}, ['t'], 1, 8)[0].compliant


def test_model_config_is_a_copy_with_the_top_level_preprocessor():
    """Tools build from model_config(cfg): DETR constructors write into the dicts they get,
    and mmpretrain configs keep data_preprocessor (num_classes for Mixup) at the top level."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    cfg = Config.fromfile(osp.join(REPO, 'configs', 'synthetic',
                                   'dino-4scale_r50-tiny-maxq-2of4_synthetic.py'))
    cfg.data_preprocessor = cfg.model.pop('data_preprocessor')  # as mmpretrain keeps it
    built = model_config(cfg)
    assert built == dict(cfg.model, data_preprocessor=cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope('mmdet'):
        plain = dict(built, type='DINO')
        del plain['sparsity'], plain['detector']
        MODELS.build(plain)  # a plain DINO writes into the dict it gets ...
        assert 'share_pred_layer' in plain['bbox_head']
        MODELS.build(model_config(cfg))  # ... but not into the config
    assert not {'share_pred_layer', 'num_pred_layer'} & set(cfg.model.bbox_head)
    assert 'data_preprocessor' not in cfg.model
    # A model's own data_preprocessor wins, as in MMEngine's Runner.
    cfg.model.data_preprocessor = dict(type='DetDataPreprocessor')
    assert model_config(cfg)['data_preprocessor'] == dict(type='DetDataPreprocessor')
