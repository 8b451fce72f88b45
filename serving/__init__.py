"""HTTP services: the local OpenAI-compatible tuning/inference service and the gateway."""
