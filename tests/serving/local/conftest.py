"""The local service's own fixtures: the real pretrained base model, built once a session when a test asks."""

from tuneops.serving.local.testing import smollm2_model  # noqa: F401
