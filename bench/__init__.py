"""Benchmarks for Usage Metering: one command, `PYTHONPATH=src python -m bench`.

Nothing here is a unit test: every number is a median over repeated runs and is
printed next to a baseline measured in the same run, so a noisy machine shows
up as noise in both columns rather than as a false regression.
"""
