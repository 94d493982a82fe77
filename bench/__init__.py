"""Benchmark figures and measurements that sit outside the package's runtime path."""
