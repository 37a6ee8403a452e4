"""Benchmark scripts (run as files: ``python benchmarks/NAME.py``); shared helpers in
:mod:`benchmarks.timing`."""
