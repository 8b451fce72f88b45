"""MLflow registry adapter, naming conventions, promotion ledger and lineage.

Public API (import from the modules; this package imports nothing so MLflow loads only on use):

- ``types``: ``RegistrationRequest``, ``DatasetLink``, ``RegisteredVersion``, ``LedgerEntry``,
  ``PromotionResult`` (frozen dataclasses, no SDK).
- ``conventions`` (pure): tag names, aliases, ``plan_promotion``, ``diff_aliases``, ``version_at``,
  ``parse_model_ref``.
- ``mlflow_store.RegistryStore``: the MLflow adapter (``from_settings``, ``aliases``,
  ``version_by_alias``, ``get_version``, ``find_version_by_job``, ``upsert_webhook``...), and
  ``open_mlflow_store(tracking_uri)`` (first open of a store, seeded from the machine's template).
- ``tracking.RunTracker``: MLflow runs for every stage (``start_run``, ``find_or_start_run``,
  ``log_batch``, ``metric_history``, ``log_text/dict/table/figure/bytes/file``,
  ``log_dataset_inputs``, ``log_manifest``), with ``MetricPoint``, ``SplitInput``,
  ``stage_inputs``/``registration_inputs`` (the two input layouts), ``mlflow_digest``.
- ``register.register_model(request, store)``; ``register.warm_up_registration()`` (while a job trains).
- ``ledger.Ledger.open(state_db_url)``: the append-only promotion ledger; ``ledger.current_actor()``
  (``TUNEOPS_ACTOR``, else the OS user): who the CLI and flows write into it.
- ``promotion.promote / reconcile / rollback``.
- ``lineage.build_lineage`` (JSON schema: ``docs/lineage-json.md``), ``render`` for humans.
- ``tasks``: Prefect tasks ``register_model_task``, ``set_challenger_task``,
  ``find_registered_version``, ``challenger_still_owed``.
- ``webhooks``: receiver for MLflow registry webhooks (``tuneops registry webhook``).
"""
