"""tuneops: MLOps orchestration for fine-tuned LLMs.

Data versioning → fine-tune → evaluation vs base → MLflow registration → gated rollout →
drift-triggered retraining, as Prefect flows. Importing this package has no side effects.
"""

__version__ = "0.1.0"
