"""The rollout stage."""
