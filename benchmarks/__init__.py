"""The benchmark suite: scripts that measure termjobs against the machine's limits and a
peer, each printing its figures. Run them all with ``python -m benchmarks`` from the
repository root, or one with ``python -m benchmarks.<name>`` (see benchmarks/RESULTS.md)."""
