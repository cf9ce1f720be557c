"""dagserve's benchmarks: distance to the physical limit and to NVIDIA Triton, side by side.

``python -m benchmarks`` (or ``benchmarks/run.sh``) reproduces every figure of
``benchmarks/RESULTS.md``; see ``benchmarks/README.md``.
"""
