"""The evaluation stage: is the fine-tune better than the base model, and not worse than the champion?

Public API (import from the modules; nothing is imported here, so importing the package is cheap):

* ``tasks.evaluate_candidate_task`` (Prefect task) / ``pipeline.evaluate_candidate`` (plain):
  answer, score, compare, gate and log one candidate; returns ``pipeline.EvaluationResult``.
* ``pipeline.model_under_test(spec, settings, label, model_id)``: a ``types.ModelUnderTest`` on
  the spec's provider with the production system prompt.
* ``sources.resolve_test_split``: ``--test-file`` / ``NAME@DIGEST`` / ``data.test`` to a local file.
* ``rules.decide_promotion`` (pure), ``stats.paired_bootstrap`` (pure).
* ``nltk_data.ensure_nltk_data``: BLEU/GLEU/METEOR data built from local sources, never downloaded.

Modules: pure core ``rules``, ``stats``, ``summary``, ``formats``, ``types``, ``testset``;
adapters ``generate`` (openai SDK), ``score`` (azure-ai-evaluation), ``report`` (MLflow);
``pipeline`` composes them; ``tasks`` holds the Prefect wrapper, artifact and event.
"""
