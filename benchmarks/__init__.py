"""Reproducible throughput and memory runs; results in docs/BENCHMARKS.md.

Run ``python -m benchmarks.run --help``. Not tests: CI does not run them.
"""
