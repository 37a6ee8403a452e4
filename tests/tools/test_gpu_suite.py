"""benchmarks/gpu_suite.sh's plumbing on the CPU: steps, per-step files, summary, exit code.

Two short steps of the dry run (the whole dry run takes minutes: docs/benchmarks.md).
"""
import os
import subprocess
import sys

from ..conftest import REPO

SUITE = os.path.join(REPO, 'benchmarks', 'gpu_suite.sh')


def suite(args, out):
    env = dict(os.environ, PY=sys.executable, OUT=str(out), PYTHONPATH=REPO,
               OMP_NUM_THREADS='1')
    return subprocess.run(['bash', SUITE, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_dry_run_steps_write_their_files_and_the_summary(tmp_path):
    proc = suite(['--device', 'cpu', '--only', 'env,deploy_speed_tv'], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ['summary.txt', 'torch_only.txt']
    summary = (tmp_path / 'summary.txt').read_text().splitlines()
    assert summary[0].startswith('gpu_suite.sh --device cpu:')
    assert [line.split(' (')[0] for line in summary[1:]] == [
        'PASSED env', 'PASSED deploy_speed_tv']
    log = (tmp_path / 'torch_only.txt').read_text()
    assert 'torch ' in log and '== deit_s (torchvision)' in log
    assert '2:4 path skipped: 2:4 semi-structured weights need a CUDA device' in log


def test_spent_budget_skips_and_fails_and_bad_arguments_are_refused(tmp_path):
    proc = suite(['--device', 'cpu', '--only', 'env', '--budget', '1'], tmp_path)
    assert proc.returncode == 1
    assert 'SKIPPED env (budget of 1 s spent)' in (tmp_path / 'summary.txt').read_text()
    proc = suite(['--device', 'gpu'], tmp_path)
    assert proc.returncode == 2 and '--device must be cuda or cpu' in proc.stderr
    proc = suite(['--frobnicate'], tmp_path)
    assert proc.returncode == 2 and 'unknown argument --frobnicate' in proc.stderr
