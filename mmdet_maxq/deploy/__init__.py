"""Export of a folded, verified N:M checkpoint that plain MMDetection loads (tools/deploy.py)."""
from .export import (PACKAGE_HOOKS, DeployError, ExportResult, VerificationError,
                     check_sparse_config, deploy_paths, export_verified, fold_sparse_detector,
                     plain_config, verify_export)
from .verify import (Check, ImageCheck, LayerCheck, VerificationReport, check_nm_layers,
                     compare_predictions, run_plain_process, sample_batches)

__all__ = [
    'PACKAGE_HOOKS', 'DeployError', 'ExportResult', 'VerificationError', 'check_sparse_config',
    'deploy_paths', 'export_verified', 'fold_sparse_detector', 'plain_config', 'verify_export',
    'Check', 'ImageCheck', 'LayerCheck', 'VerificationReport', 'check_nm_layers',
    'compare_predictions', 'run_plain_process', 'sample_batches'
]
