"""Benchmarks: commands that print measured figures (speed, memory, quality), never run by the test suite."""
