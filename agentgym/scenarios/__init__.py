"""Scenarios and the stand-in model used by the demo, tests and benchmarks."""
