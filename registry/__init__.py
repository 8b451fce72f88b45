"""MLflow registry adapter, naming conventions, promotion ledger and lineage."""
