"""Helpers the test modules share: server processes and in-process nodes, the Kafka broker, PostgreSQL and lakes.

Importable as `support` because pyproject's [tool.pytest.ini_options] puts tests/ on the path
(`pythonpath = ["tests"]`): `from support.nodes import ServerProcess`.
"""
