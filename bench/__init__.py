"""Benchmarks of the scanner against a real anvil chain (see bench/README.md)."""
