"""Fixtures of the serving tests: the shipped local-service fixtures (tiny base built once a session)."""

from tuneops.serving.local.testing import local_service, tiny_test_model  # noqa: F401
