"""MLflow registry adapter, naming conventions, promotion ledger and lineage.

Public API (import from the modules; this package imports nothing so MLflow loads only on use):

- ``types``: ``RegistrationRequest``, ``DatasetLink``, ``RegisteredVersion``, ``LedgerEntry``,
  ``PromotionResult`` (frozen dataclasses, no SDK).
- ``conventions`` (pure): tag names, aliases, ``plan_promotion``, ``diff_aliases``, ``version_at``,
  ``parse_model_ref``.
- ``mlflow_store.RegistryStore``: the MLflow adapter (``from_settings``, ``aliases``,
  ``version_by_alias``, ``get_version``, ``find_version_by_job``...).
- ``register.register_model(request, store)`` and ``register.links_from_version(dataset_version)``.
- ``ledger.Ledger.open(state_db_url)``: the append-only promotion ledger.
- ``promotion.promote / reconcile / rollback``.
- ``lineage.build_lineage`` (JSON schema: ``docs/lineage-json.md``), ``render`` for humans.
- ``tasks``: Prefect tasks ``register_model_task``, ``set_challenger_task``.
- ``webhooks``: receiver for MLflow registry webhooks (``tuneops registry webhook``).
"""
