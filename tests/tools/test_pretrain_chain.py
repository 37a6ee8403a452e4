"""The whole recipe end to end on the CPU: a narrow sparse ImageNet-style classifier trained by
mmpretrain's Runner (mmpretrain's own tools/train.py and tools/test.py, and this project's) ->
its checkpoint initialises the sparse detector (no converter) -> a few COCO-synthetic
iterations -> tools/deploy.py for the detector and for the classifier."""
import json
import os.path as osp
import re

import pytest
import torch

from mmdet_maxq.checkpoint import checkpoint_masks
from mmdet_maxq.sparsity import is_nm_sparse
from ..conftest import SINGLE_THREAD, data_options, run_tool

CLASSIFIER = 'configs/synthetic/resnet50-tiny-maxq-2of8_synthetic-imagenet.py'
DETECTOR = 'configs/synthetic/faster-rcnn_r50-tiny-maxq-2of8-from-classifier_fpn_synthetic.py'
INCREMENTAL = 'configs/synthetic/faster-rcnn_r50-tiny-maxq-2of8-incremental_fpn_synthetic.py'
INIT = 'model.backbone.init_cfg.checkpoint='


def mmpretrain_tool(name):
    """mmpretrain's own tools/train.py or tools/test.py, shipped inside its package."""
    import mmpretrain

    path = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', name)
    assert osp.isfile(path), path
    return path


def imagenet_options(root):
    root = root.rstrip('/') + '/'
    return [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


@pytest.fixture(scope='module')
def synthetic_imagenet(tmp_path_factory):
    from mmdet_maxq.datasets import make_synthetic_imagenet

    root = str(tmp_path_factory.mktemp('data') / 'synthetic_imagenet')
    make_synthetic_imagenet(root, num_classes=4, train_per_class=16, val_per_class=4,
                            image_size=32, seed=0)
    return root


@pytest.fixture(scope='module')
def classifier_run(synthetic_imagenet, tmp_path_factory):
    """Two epochs (8 iterations of 8 images) with mmpretrain's own tools/train.py."""
    work = str(tmp_path_factory.mktemp('classifier'))
    proc = run_tool([mmpretrain_tool('train.py'), CLASSIFIER, '--work-dir', work,
                     '--cfg-options', *imagenet_options(synthetic_imagenet)], env=SINGLE_THREAD)
    return work, proc.stdout + proc.stderr


def test_classifier_trains_sparse_under_mmpretrains_runner(classifier_run):
    work, log = classifier_run
    assert 'SparseClassifier: ImageClassifier with method=maxq 2:8' in log
    assert '52 convs sparse, 1 matched convs left dense' in log
    assert re.search(r'preserve_rate: 1\.0+', log) and re.search(r'preserve_rate: 0\.0+', log)
    assert 'sparsity/nm_blocks: 1.0000' in log  # the logger hook, under mmpretrain's Runner
    assert re.search(r'accuracy/top1: [0-9.]+', log)
    state = torch.load(osp.join(work, 'epoch_2.pth'), map_location='cpu', weights_only=True)
    assert state['meta']['sparsity_schedule']['preserve'] == 0.0
    assert 'random_state' in state['meta']
    weights = state['state_dict']
    assert not [k for k in weights if k.endswith('.mask')]  # masks follow from the weights
    masks = checkpoint_masks(state)
    assert len(masks) == 52 and all(k.startswith('backbone.') for k in masks)
    for key, mask in masks.items():  # at preserve rate 0 the model computed exactly 2:8
        assert is_nm_sparse(weights[key + '.weight'] * mask, 2, 8), key


def test_mmpretrains_test_tool_prints_top1(classifier_run, synthetic_imagenet, tmp_path):
    work, _ = classifier_run
    proc = run_tool([mmpretrain_tool('test.py'), CLASSIFIER, osp.join(work, 'epoch_2.pth'),
                     '--work-dir', str(tmp_path), '--cfg-options',
                     *imagenet_options(synthetic_imagenet)], env=SINGLE_THREAD)
    top1 = re.search(r'accuracy/top1: ([0-9.]+)', proc.stdout + proc.stderr)
    assert top1, (proc.stdout + proc.stderr)[-3000:]
    print(f'synthetic top-1 of the sparse classifier: {top1.group(1)}')
    assert 0 <= float(top1.group(1)) <= 100


def test_projects_tools_train_and_test_the_classifier(synthetic_imagenet, tmp_path):
    work = tmp_path / 'ours'
    run_tool(['tools/train.py', CLASSIFIER, '--work-dir', str(work), '--cfg-options',
              'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'custom_hooks.0.end=1',
              'param_scheduler.0.T_max=1', 'param_scheduler.0.end=1',
              'train_dataloader.dataset.indices=16', *imagenet_options(synthetic_imagenet)],
             env=SINGLE_THREAD)
    proc = run_tool(['tools/test.py', CLASSIFIER, str(work / 'epoch_1.pth'), '--work-dir',
                     str(tmp_path / 'test'), '--cfg-options',
                     *imagenet_options(synthetic_imagenet)], env=SINGLE_THREAD)
    assert re.search(r'accuracy/top1: [0-9.]+', proc.stdout + proc.stderr)


@pytest.fixture(scope='module')
def detector_run(classifier_run, synthetic_coco, tmp_path_factory):
    classifier_work, _ = classifier_run
    work = str(tmp_path_factory.mktemp('detector'))
    checkpoint = osp.join(classifier_work, 'epoch_2.pth')
    proc = run_tool(['tools/train.py', DETECTOR, '--work-dir', work, '--cfg-options',
                     INIT + checkpoint, 'train_cfg.max_epochs=1', 'train_cfg.val_interval=2',
                     'train_dataloader.dataset.indices=4', *data_options(synthetic_coco)],
                    env=SINGLE_THREAD)
    return work, checkpoint, proc.stdout + proc.stderr


def test_detector_starts_from_the_classifier_and_deploys(detector_run, synthetic_coco, tmp_path):
    work, checkpoint, log = detector_run
    assert 'SparseDetector: FasterRCNN with method=maxq 2:8' in log
    assert 'DenseStartCheckHook:' not in log  # the classifier's checkpoint carries its masks
    assert 'missing keys' not in log and 'unexpected key' not in log and 'size mismatch' \
        not in log
    out = tmp_path / 'deploy' / 'detector.pth'
    proc = run_tool(['tools/deploy.py', DETECTOR, osp.join(work, 'epoch_1.pth'), str(out),
                     '--num-images', '2', '--cfg-options', INIT + checkpoint,
                     'model.test_cfg.rcnn.score_thr=0.0', *data_options(synthetic_coco)],
                    env=SINGLE_THREAD)
    assert '52 of 52 folded convs exactly 2:8' in proc.stdout + proc.stderr
    state = torch.load(out, map_location='cpu', weights_only=True)['state_dict']
    assert not [k for k in state if k.endswith('.mask')]


PREDICT = """
import json, sys
if sys.argv[1] == 'plain':
    sys.modules['mmdet_maxq'] = None  # mmpretrain alone
import mmcv
import torch
from mmengine.config import Config
from mmpretrain.apis import init_model
config, checkpoint, images = sys.argv[2], sys.argv[3], sys.argv[4:]
model = init_model(Config.fromfile(config), checkpoint, device='cpu')
model.eval()
from mmpretrain.apis import ImageClassificationInferencer
inferencer = ImageClassificationInferencer(model)
print('PREDICTED ' + json.dumps([int(r['pred_label']) for r in inferencer(images)]))
"""


def _predicted(stdout: str) -> list:
    """The labels PREDICT printed (the inferencer's progress bar may share their line)."""
    found = re.findall(r'PREDICTED (\[[0-9, ]*\])', stdout)
    assert len(found) == 1, stdout[-2000:]
    return json.loads(found[0])


def test_classifier_deploys_to_plain_mmpretrain(classifier_run, synthetic_imagenet, tmp_path):
    """The classifier deploys to a plain mmpretrain model that predicts the same classes."""
    work, _ = classifier_run
    trained = osp.join(work, 'epoch_2.pth')
    out = tmp_path / 'deploy' / 'classifier.pth'
    run_tool(['tools/deploy.py', CLASSIFIER, trained, str(out), '--cfg-options',
              *imagenet_options(synthetic_imagenet)], env=SINGLE_THREAD)
    state = torch.load(out, map_location='cpu', weights_only=True)['state_dict']
    assert not [k for k in state if k.endswith('.mask')]
    eligible = [k for k, v in state.items() if k.startswith('backbone.') and v.dim() == 4 and
                v.shape[1] % 8 == 0]
    assert len(eligible) == 52
    assert all(is_nm_sparse(state[k], 2, 8) for k in eligible)
    lines = open(osp.join(synthetic_imagenet, 'meta', 'val.txt')).read().split('\n')
    images = [osp.join(synthetic_imagenet, 'val', line.split()[0]) for line in lines if line]
    sparse = _predicted(run_tool(['-c', PREDICT, 'sparse', CLASSIFIER, trained, *images],
                                 env=SINGLE_THREAD).stdout)
    plain = _predicted(run_tool(['-I', '-c', PREDICT, 'plain', str(out.with_suffix('.py')),
                                 str(out), *images], env=SINGLE_THREAD).stdout)
    assert plain == sparse


def test_bad_checkpoints_give_one_clear_line(classifier_run, synthetic_coco,
                                             synthetic_imagenet, tmp_path):
    classifier_work, _ = classifier_run
    checkpoint = osp.join(classifier_work, 'epoch_2.pth')
    # A classifier config that names a missing checkpoint.
    missing = str(tmp_path / 'missing.pth')
    for options in (['load_from=' + missing],
                    ['model.init_cfg.type=Pretrained', 'model.init_cfg.checkpoint=' + missing]):
        work = tmp_path / 'w1'
        proc = run_tool(['tools/train.py', CLASSIFIER, '--work-dir', str(work),
                         '--cfg-options', *options, *imagenet_options(synthetic_imagenet)],
                        check=False)
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
        assert 'missing.pth' in proc.stderr and 'does not exist' in proc.stderr
        assert not work.exists()
    # An mmpretrain checkpoint of another width, then another depth, into the detector.
    for option, expected in (
            ('model.backbone.base_channels=32',
             r'does not fit backbone \(ResNet\): \d+ keys of other shapes \(e\.g\. conv1\.weight: '
             r'checkpoint \(16, 3, 7, 7\), model \(32, 3, 7, 7\)\)'),
            ('model.backbone.depth=101', r'does not fit backbone \(ResNet\): \d+ missing keys '
             r'\(e\.g\. layer3\.6\.conv1\.weight\)')):
        work = tmp_path / 'w2'
        proc = run_tool(['tools/train.py', DETECTOR, '--work-dir', str(work), '--cfg-options',
                         INIT + checkpoint, option, *data_options(synthetic_coco)], check=False)
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
        assert re.search(expected, proc.stderr), proc.stderr[-2000:]
        assert 'depth / base_channels' in proc.stderr
        assert not work.exists()


@pytest.fixture(scope='module')
def dense_classifier_checkpoint(tmp_path_factory):
    """A plain (dense) mmpretrain ResNet-50 classifier of the detector's width."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dense = MODELS.build(dict(type='ImageClassifier', backbone=dict(
            type='ResNet', depth=50, base_channels=16, stem_channels=16)))
    path = tmp_path_factory.mktemp('dense') / 'dense.pth'
    torch.save({'state_dict': dense.state_dict()}, path)
    return str(path)


def test_dense_checkpoint_into_a_full_nm_fine_tune_warns(dense_classifier_checkpoint,
                                                         synthetic_coco, tmp_path):
    path = dense_classifier_checkpoint
    proc = run_tool(['tools/train.py', DETECTOR, '--work-dir', str(tmp_path / 'w'),
                     '--cfg-options', INIT + path, 'train_cfg.max_epochs=1',
                     'train_cfg.val_interval=2', 'train_dataloader.dataset.indices=2',
                     *data_options(synthetic_coco)], env=SINGLE_THREAD)
    log = proc.stdout + proc.stderr
    assert log.count('DenseStartCheckHook: 52 sparse layers (e.g. \'backbone.layer1.0.conv1\') '
                     'were loaded from a checkpoint that is not sparse') == 1
    assert '*-incremental config' in log


def test_incremental_start_recalibrates_bn_under_mmdetections_runner(
        dense_classifier_checkpoint, synthetic_coco, tmp_path):
    proc = run_tool(['tools/train.py', INCREMENTAL, '--work-dir', str(tmp_path / 'w'),
                     '--cfg-options', INIT + dense_classifier_checkpoint,
                     'train_cfg.max_epochs=2', 'train_cfg.val_interval=3',
                     'train_dataloader.dataset.indices=4', *data_options(synthetic_coco)],
                    env=SINGLE_THREAD)
    log = proc.stdout + proc.stderr
    assert 'BNRecalibrationHook: re-estimated the running statistics of 53 BN layers on the ' \
        'sparse forward (preserve rate 1.0) over 2 training batches' in log
    assert 'DenseStartCheckHook:' not in log
