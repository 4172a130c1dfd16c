"""What the benchmarks share: services under load, load generators, CPU accounting, result
tables (one module each)."""
