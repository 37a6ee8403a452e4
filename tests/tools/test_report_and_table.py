"""tools/sparsity_report.py and tools/ap_table.py on work dirs of real (short) trainings."""
import os.path as osp
import re

import pytest

from ..conftest import SHORT_MAXQ_CONFIG, SINGLE_THREAD, data_options, run_tool

DENSE = 'configs/synthetic/mask-rcnn_r18-tiny-dense_fpn_synthetic.py'


@pytest.fixture(scope='module')
def dense_run(synthetic_coco, tmp_path_factory):
    """The dense-method baseline through the wrapper: one epoch of 4 iterations, validated."""
    work = str(tmp_path_factory.mktemp('dense'))
    run_tool(['tools/train.py', DENSE, '--work-dir', work, '--cfg-options',
              'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
              'train_dataloader.dataset.indices=8', *data_options(synthetic_coco)],
             env=SINGLE_THREAD)
    return work


def test_sparsity_report_finds_every_eligible_conv_exactly_2of8(short_maxq_run, tmp_path):
    plot = tmp_path / 'out.png'
    proc = run_tool(['tools/sparsity_report.py', SHORT_MAXQ_CONFIG,
                     osp.join(short_maxq_run, 'epoch_2.pth'), '--layers', '--plot', str(plot)],
                    env=SINGLE_THREAD)
    out = proc.stdout
    assert ('19 of 19 N:M-eligible backbone convs are exactly 2:8; dense (ineligible): '
            'backbone.conv1') in out, out
    # The per-layer table lists every backbone conv, the stem as not eligible.
    assert re.search(r'backbone\.conv1\s*│\s*16x3x7x7\s*│\s*2:8\s*│\s*False', out), out
    assert len(re.findall(r'│\s*True\s*│\s*True\s*│\s*0\.75\d', out)) == 19, out
    assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert f'plot written to {plot}' in out.replace('\n', '')


def test_sparsity_report_refuses_to_replace_a_plot_unless_asked(short_maxq_run, tmp_path):
    plot = tmp_path / 'keep.png'
    plot.write_bytes(b'keep me')
    args = ['tools/sparsity_report.py', SHORT_MAXQ_CONFIG,
            osp.join(short_maxq_run, 'epoch_2.pth'), '--plot', str(plot)]
    proc = run_tool(args, check=False, env=SINGLE_THREAD)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert f'--plot: {plot} exists; pass --overwrite to replace it' in proc.stderr
    assert plot.read_bytes() == b'keep me'
    run_tool(args + ['--overwrite'], env=SINGLE_THREAD)
    assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def _rows(table):
    lines = [line for line in table.splitlines() if line.startswith('|')]
    header = [cell.strip() for cell in lines[0].strip('|').split('|')]
    return [dict(zip(header, (c.strip() for c in line.strip('|').split('|'))))
            for line in lines[2:]]


def test_ap_table_puts_the_dense_row_first(short_maxq_run, dense_run, tmp_path):
    out = tmp_path / 'results.md'
    proc = run_tool(['tools/ap_table.py', short_maxq_run, dense_run, '--out', str(out)])
    assert out.read_text() == proc.stdout
    rows = _rows(proc.stdout)
    assert [(r['model'], r['method'], r['N:M']) for r in rows] == [
        ('Mask R-CNN R-18', 'Dense', '-'), ('Mask R-CNN R-18', 'MaxQ', '2:8')]
    number = re.compile(r'^\d+\.\d$')
    for row in rows:
        for column in ('box AP', 'box AP50', 'box AP75', 'mask AP', 'mask AP50', 'mask AP75'):
            assert number.match(row[column]), (row, column)
    assert 'val (step 2) results' in proc.stderr and 'val (step 1) results' in proc.stderr
