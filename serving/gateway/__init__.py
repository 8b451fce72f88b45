"""The serving gateway: OpenAI-compatible traffic routed by MLflow aliases and the rollout state.

``assignment`` is its pure core (who gets which version); the request log and routing state it
writes live in ``tuneops.requestlog`` and ``tuneops.routing_state`` so readers never import it.
"""
