"""Benchmarks of the fused ops against the pure-PyTorch references (eager and torch.compile).

Run from the command line: ``gencore bench coupling`` or ``python bench/bench_coupling.py``.
"""
