"""Device tuning: the per-device profile file, the sweeps of `vkmtp tune`, the kernel cases and the timing
harness they (and tools/bench_*.py) share."""
