"""The transformer-family recipe end to end on the CPU, through both toolboxes' own tools.

Tiny Swin-T, ConvNeXt-T and DeiT-S MaxQ 2:4 classifiers (the ImageNet configs shrunk) train two
epochs with mmpretrain's packaged tools/train.py -> the Swin and ConvNeXt checkpoints initialise
the Mask R-CNN Swin-T (MMDetection's packaged tools/train.py and tools/test.py; with_cp=True)
and ConvNeXt-T detectors (this project's tools/train.py, whose pretrained-checkpoint check
runs) -> tools/deploy.py writes verified plain models whose linear weights are exactly 2:4.
DINO with its encoder / decoder linear layers 2:4 trains, tests and deploys the same way (the
deploy builds from a copy of the config: DINO writes into its bbox_head dict).
"""
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from mmdet_maxq.checkpoint import checkpoint_masks
from mmdet_maxq.sparsity import is_nm_sparse
from ..conftest import SINGLE_THREAD, data_options, run_tool
from .test_pretrain_chain import imagenet_options, mmpretrain_tool

SYNTH = 'configs/synthetic/'
CLASSIFIERS = {  # name -> (config, sparse convs, sparse linear layers)
    'swin': (SYNTH + 'swin-t-tiny-maxq-2of4_synthetic-imagenet.py', 0, 35),
    'convnext': (SYNTH + 'convnext-t-tiny-maxq-2of4_synthetic-imagenet.py', 3, 10),
    'deit': (SYNTH + 'deit-small-tiny-maxq-2of4_synthetic-imagenet.py', 0, 8),
}
SWIN_DETECTOR = SYNTH + 'mask-rcnn_swin-t-tiny-maxq-2of4-from-classifier_fpn_synthetic.py'
CONVNEXT_DETECTOR = SYNTH + 'mask-rcnn_convnext-t-tiny-maxq-2of4-from-classifier_fpn_synthetic.py'
DINO = SYNTH + 'dino-4scale_r50-tiny-maxq-2of4_synthetic.py'
INIT = 'model.backbone.init_cfg.checkpoint='
NEW_NORMS = ('norm0.weight', 'norm0.bias', 'norm1.weight', 'norm1.bias', 'norm2.weight',
             'norm2.bias')


def mmdet_tool(name):
    """MMDetection's own tools/train.py or tools/test.py, shipped inside its package."""
    import mmdet

    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', name)
    assert osp.isfile(path), path
    return path


def _log(proc):
    return proc.stdout + proc.stderr


def _losses(log):
    """The total losses the training log printed (each must be a finite number)."""
    losses = re.findall(r'Epoch\(train\).*?  loss: (\S+)', log)
    assert losses, log[-2000:]
    assert all(float(loss) == float(loss) and float(loss) < 1e4 for loss in losses), losses
    return [float(loss) for loss in losses]


@pytest.fixture(scope='module')
def synthetic_imagenet64(tmp_path_factory):
    """4 classes, 8 training and 2 validation images each, 64 px (Swin's patch 4 and four
    stages, DeiT's 16 px patches)."""
    from mmdet_maxq.datasets import make_synthetic_imagenet

    root = str(tmp_path_factory.mktemp('data') / 'synthetic_imagenet')
    make_synthetic_imagenet(root, num_classes=4, train_per_class=8, val_per_class=2,
                            image_size=64, seed=0)
    return root


@pytest.fixture(scope='module')
def classifier_runs(synthetic_imagenet64, tmp_path_factory):
    """Each tiny classifier trained once (two epochs of 4 iterations) by mmpretrain's
    packaged tools/train.py, on demand: name -> (work dir, log)."""
    runs = {}

    def get(name):
        if name not in runs:
            work = str(tmp_path_factory.mktemp(name))
            proc = run_tool([mmpretrain_tool('train.py'), CLASSIFIERS[name][0], '--work-dir',
                             work, '--cfg-options', *imagenet_options(synthetic_imagenet64)],
                            env=SINGLE_THREAD)
            runs[name] = work, _log(proc)
        return runs[name]

    return get


@pytest.mark.parametrize('name', sorted(CLASSIFIERS))
def test_classifier_trains_2of4_under_mmpretrains_tools(name, classifier_runs):
    config, convs, linears = CLASSIFIERS[name]
    work, log = classifier_runs(name)
    assert 'SparseClassifier: ImageClassifier with method=maxq 2:4' in log
    assert f'{convs} convs sparse, {linears} linear layers sparse' in log
    # AdamW (the recipe's): the pruned-weight decay is decoupled.
    assert f'SRSTEDecayHook: pruned-weight decay 0.1 on {convs + linears} sparse layers, ' \
           'decoupled (AdamW)' in log
    assert re.search(r'preserve_rate: 1\.0+', log) and re.search(r'preserve_rate: 0\.0+', log)
    assert 'sparsity/nm_blocks: 1.0000' in log
    assert re.search(r'accuracy/top1: [0-9.]+', log)
    _losses(log)
    state = torch.load(osp.join(work, 'epoch_2.pth'), map_location='cpu', weights_only=True)
    assert state['meta']['sparsity_schedule']['preserve'] == 0.0
    masks = checkpoint_masks(state)
    assert len(masks) == convs + linears
    weights = state['state_dict']
    dims = sorted({weights[key + '.weight'].dim() for key in masks})
    assert dims == ([2, 4] if convs else [2])
    for key, mask in masks.items():
        assert is_nm_sparse(weights[key + '.weight'] * mask, 2, 4), key


def test_deit_classifier_deploys_to_plain_mmpretrain(classifier_runs, synthetic_imagenet64,
                                                     tmp_path):
    work, _ = classifier_runs('deit')
    out = tmp_path / 'deit.pth'
    proc = run_tool(['tools/deploy.py', CLASSIFIERS['deit'][0], osp.join(work, 'epoch_2.pth'),
                     str(out), '--cfg-options', *imagenet_options(synthetic_imagenet64)],
                    env=SINGLE_THREAD)
    assert '8 of 8 folded layers exactly 2:4' in _log(proc)
    state = torch.load(out, map_location='cpu', weights_only=True)['state_dict']
    linear = [k for k in state if re.match(r'backbone\.layers\.\d\.(attn\.(qkv|proj)|'
                                           r'ffn\.layers\.(0\.0|1))\.weight$', k)]
    assert len(linear) == 8 and all(is_nm_sparse(state[k], 2, 4) for k in linear)
    assert float((state['backbone.patch_embed.projection.weight'] == 0).float().mean()) < 0.1


def _check_backbone_loaded(classifier_checkpoint, detector_checkpoint):
    """Every classifier backbone key is a detector backbone key of the same shape (the
    detector's output norms of stages 0-2 are its own), and after a few warm-up iterations
    (lr from 1e-7) the detector's backbone weights are still the classifier's."""
    src = torch.load(classifier_checkpoint, map_location='cpu',
                     weights_only=True)['state_dict']
    dst = torch.load(detector_checkpoint, map_location='cpu', weights_only=True)['state_dict']
    src = {k[len('backbone.'):]: v for k, v in src.items() if k.startswith('backbone.')}
    dst = {k[len('backbone.'):]: v for k, v in dst.items() if k.startswith('backbone.')}
    assert sorted(set(dst) - set(src)) == sorted(NEW_NORMS)
    assert sorted(set(src) - set(dst)) == []
    assert all(src[k].shape == dst[k].shape for k in src)
    moved = max(float((src[k].float() - dst[k].float()).abs().max()) for k in src
                if src[k].is_floating_point())
    assert moved < 1e-3, moved


@pytest.fixture(scope='module')
def swin_detector_run(classifier_runs, synthetic_coco, tmp_path_factory):
    """Mask R-CNN Swin from the Swin classifier: 2 iterations with MMDetection's packaged
    tools/train.py (with_cp=True, so gradient checkpointing recomputes the blocks)."""
    classifier_work, _ = classifier_runs('swin')
    checkpoint = osp.join(classifier_work, 'epoch_2.pth')
    work = str(tmp_path_factory.mktemp('swin_detector'))
    proc = run_tool([mmdet_tool('train.py'), SWIN_DETECTOR, '--work-dir', work,
                     '--cfg-options', INIT + checkpoint, 'train_dataloader.dataset.indices=4',
                     'train_cfg.val_interval=2', *data_options(synthetic_coco)],
                    env=SINGLE_THREAD)
    return work, checkpoint, _log(proc)


def test_swin_detector_starts_from_the_classifier(swin_detector_run):
    work, checkpoint, log = swin_detector_run
    assert 'SparseDetector: MaskRCNN with method=maxq 2:4' in log
    assert '0 convs sparse, 35 linear layers sparse' in log
    assert 'decoupled (AdamW)' in log
    assert 'DenseStartCheckHook:' not in log  # a sparse classifier's checkpoint
    _losses(log)
    assert Config.fromfile(osp.join(work, osp.basename(SWIN_DETECTOR))).model.backbone.with_cp
    _check_backbone_loaded(checkpoint, osp.join(work, 'epoch_1.pth'))


def test_swin_detector_tests_and_deploys(swin_detector_run, synthetic_coco, tmp_path):
    work, checkpoint, _ = swin_detector_run
    trained = osp.join(work, 'epoch_1.pth')
    proc = run_tool([mmdet_tool('test.py'), SWIN_DETECTOR, trained, '--work-dir',
                     str(tmp_path / 'test'), '--cfg-options', INIT + checkpoint,
                     *data_options(synthetic_coco)], env=SINGLE_THREAD)
    assert re.search(r'coco/bbox_mAP: [0-9.]+ .*coco/segm_mAP: [0-9.]+', _log(proc))
    out = tmp_path / 'deploy' / 'swin.pth'
    proc = run_tool(['tools/deploy.py', SWIN_DETECTOR, trained, str(out), '--num-images', '2',
                     '--cfg-options', INIT + checkpoint, 'model.test_cfg.rcnn.score_thr=0.0',
                     *data_options(synthetic_coco)], env=SINGLE_THREAD)
    assert '35 of 35 folded layers exactly 2:4' in _log(proc)
    state = torch.load(out, map_location='cpu', weights_only=True)['state_dict']
    linear = [k for k, v in state.items() if k.startswith('backbone.stages.') and
              k.endswith('.weight') and v.dim() == 2]
    assert len(linear) == 35 and all(is_nm_sparse(state[k], 2, 4) for k in linear)


def test_convnext_detector_from_the_classifier_under_the_projects_tools(
        classifier_runs, synthetic_coco, tmp_path):
    """tools/train.py checks the classifier checkpoint key by key against the backbone: the
    config declares norm0-2 new (pretrained_new_keys); without that it refuses."""
    classifier_work, _ = classifier_runs('convnext')
    checkpoint = osp.join(classifier_work, 'epoch_2.pth')
    refused = run_tool(['tools/train.py', CONVNEXT_DETECTOR, '--work-dir', str(tmp_path / 'r'),
                        '--cfg-options', INIT + checkpoint, 'pretrained_new_keys.backbone=[]',
                        *data_options(synthetic_coco)], check=False, env=SINGLE_THREAD)
    assert refused.returncode != 0 and 'Traceback' not in refused.stderr, \
        refused.stderr[-3000:]
    assert re.search(r'does not fit backbone \(ConvNeXt\): 6 missing keys \(e\.g\. norm0\.',
                     refused.stderr), refused.stderr[-2000:]
    work = tmp_path / 'w'
    proc = run_tool(['tools/train.py', CONVNEXT_DETECTOR, '--work-dir', str(work),
                     '--cfg-options', INIT + checkpoint, 'train_dataloader.dataset.indices=4',
                     'train_cfg.val_interval=2', *data_options(synthetic_coco)],
                    env=SINGLE_THREAD)
    log = _log(proc)
    assert '3 convs sparse, 10 linear layers sparse' in log
    _losses(log)
    assert 'DenseStartCheckHook:' not in log
    # MMEngine's Pretrained init: only the detector's own output norms are missing.
    assert 'missing keys in source state_dict: ' + ', '.join(NEW_NORMS) in log
    assert 'unexpected key' not in log
    _check_backbone_loaded(checkpoint, str(work / 'epoch_1.pth'))
    # The folded plain detector: exactly 2:4 convs and linear layers, the same outputs.
    out = tmp_path / 'deploy' / 'convnext.pth'
    proc = run_tool(['tools/deploy.py', CONVNEXT_DETECTOR, str(work / 'epoch_1.pth'), str(out),
                     '--num-images', '2', '--cfg-options', INIT + checkpoint,
                     'model.test_cfg.rcnn.score_thr=0.0', *data_options(synthetic_coco)],
                    env=SINGLE_THREAD)
    assert '13 of 13 folded layers exactly 2:4' in _log(proc)
    state = torch.load(out, map_location='cpu', weights_only=True)['state_dict']
    folded = [k for k, v in state.items() if k.startswith('backbone.') and
              k.endswith('.weight') and v.dim() in (2, 4) and v.shape[1] % 4 == 0 and
              is_nm_sparse(v, 2, 4)]
    assert {state[k].dim() for k in folded} == {2, 4} and len(folded) == 13


@pytest.fixture(scope='module')
def dino_run(synthetic_coco, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('dino'))
    proc = run_tool([mmdet_tool('train.py'), DINO, '--work-dir', work, '--cfg-options',
                     'train_dataloader.dataset.indices=4', 'train_cfg.val_interval=2',
                     *data_options(synthetic_coco)], env=SINGLE_THREAD)
    return work, _log(proc)


def test_dino_trains_with_sparse_encoder_and_decoder(dino_run):
    _, log = dino_run
    assert 'SparseDetector: DINO with method=maxq 2:4' in log
    # 52 backbone convs; encoder 1 x 6 and decoder 2 x 6 linear layers + ref_point_head's 2.
    assert '52 convs sparse, 20 linear layers sparse, 3 matched layers left dense' in log
    assert log.count('(its weight is read by nn.MultiheadAttention.forward without calling '
                     'it)') >= 2
    assert 'sparse layers were not called' not in log
    _losses(log)


def test_dino_tests_and_deploys(dino_run, synthetic_coco, tmp_path):
    work, _ = dino_run
    trained = osp.join(work, 'epoch_1.pth')
    proc = run_tool([mmdet_tool('test.py'), DINO, trained, '--work-dir', str(tmp_path / 't'),
                     '--cfg-options', *data_options(synthetic_coco)], env=SINGLE_THREAD)
    assert re.search(r'coco/bbox_mAP: [0-9.]+', _log(proc))
    out = tmp_path / 'deploy' / 'dino.pth'
    proc = run_tool(['tools/deploy.py', DINO, trained, str(out), '--num-images', '2',
                     '--cfg-options', *data_options(synthetic_coco)], env=SINGLE_THREAD)
    assert '72 of 72 folded layers exactly 2:4' in _log(proc)
    # The written config is the user's: no keys DINO's constructor wrote into bbox_head.
    plain = Config.fromfile(str(out.with_suffix('.py')))
    assert plain.model.type == 'DINO'
    assert not {'share_pred_layer', 'num_pred_layer', 'as_two_stage'} & set(
        plain.model.bbox_head)
    state = torch.load(out, map_location='cpu', weights_only=True)['state_dict']
    for key in ('encoder.layers.0.self_attn.sampling_offsets.weight',
                'decoder.layers.1.cross_attn.value_proj.weight',
                'decoder.layers.1.ffn.layers.0.0.weight'):
        assert is_nm_sparse(state[key], 2, 4), key
    assert not is_nm_sparse(state['decoder.layers.0.self_attn.attn.out_proj.weight'], 2, 4)
