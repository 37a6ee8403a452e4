"""Export of a folded, verified N:M checkpoint that plain MMDetection loads (tools/deploy.py)."""
from .export import (SPARSITY_HOOKS, DeployError, ExportResult, VerificationError,
                     check_sparse_config, deploy_paths, export_verified, fold_sparse_detector,
                     plain_config, verify_export)
from .verify import (Check, ImageCheck, LayerCheck, VerificationReport, build_plain_model,
                     check_nm_layers, compare_predictions, sample_batches)

__all__ = [
    'SPARSITY_HOOKS', 'DeployError', 'ExportResult', 'VerificationError', 'check_sparse_config',
    'deploy_paths', 'export_verified', 'fold_sparse_detector', 'plain_config', 'verify_export',
    'Check', 'ImageCheck', 'LayerCheck', 'VerificationReport', 'build_plain_model',
    'check_nm_layers', 'compare_predictions', 'sample_batches'
]
