"""Prefect flows: thin, each reads like the pipeline diagram."""
