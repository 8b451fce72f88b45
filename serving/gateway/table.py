"""The gateway's live routing: each served model's table, rebuilt from MLflow and the rollout state.

:meth:`RoutingTables.refresh` (blocking; the app runs it in a thread every
``serving.refresh_seconds`` and on demand) reads every served model's aliases from the registry
and its rollout state from the state database, derives the :class:`RoutingTable` and resolves the
champion's and challenger's upstreams, so the request path never waits on MLflow (pinned
versions are looked up once, then cached). When the aliases it sees differ from the last ones it
saw, it reconciles the promotion ledger (source ``gateway``) and records the routing change, so
a move made in the MLflow UI is in the ledger and the routing history within one refresh.
A refresh that fails keeps the previous table: a registry outage never stops traffic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from tuneops.errors import TuneopsError
from tuneops.providers import ProviderEndpoint
from tuneops.registry.conventions import OBSERVED_ACTOR
from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.promotion import reconcile
from tuneops.routing_state import RoutingState
from tuneops.serving.gateway.assignment import RoutingTable, Strategy
from tuneops.serving.gateway.upstreams import UnservableVersion, Upstream, upstream_for

log = logging.getLogger("tuneops.serving.gateway")

LEDGER_SOURCE = "gateway"
OBSERVED_REASON = "alias move observed by the gateway"
# A served version's tags (its endpoint model and provider) are re-read at most this often: they
# are set at registration and rarely edited, and reading them every refresh cost the request
# path ~10% of the GIL under load (bench/gateway_bench.py). An alias move is still seen at once.
TAGS_MAX_AGE_SECONDS = 30.0


class RoutingTables:
    """The routing tables and upstreams of the models one gateway serves (thread-safe reads)."""

    def __init__(
        self,
        models: Sequence[str],
        *,
        store: RegistryStore,
        routing: RoutingState,
        ledger: Ledger,
        endpoints: Mapping[str, ProviderEndpoint],
    ) -> None:
        self.models = tuple(models)
        self.store, self.routing, self.ledger = store, routing, ledger
        self.endpoints = dict(endpoints)
        self._tables: dict[str, RoutingTable] = {}
        self._upstreams: dict[tuple[str, str], Upstream] = {}
        self._read_at: dict[tuple[str, str], float] = {}  # when each served version's tags were read
        self._recorded: dict[str, dict[str, str]] = {}  # aliases last written to the ledger
        self._refreshing = threading.Lock()
        self.refreshed_at: float | None = None
        self.refresh_failures = 0
        self._complaints = Complaints()
        self.ledger_moves = 0

    def table(self, model: str) -> RoutingTable | None:
        """The current table of ``model``; None until the first successful refresh."""
        return self._tables.get(model)

    def cached_upstream(self, model: str, version: str) -> Upstream | None:
        return self._upstreams.get((model, version))

    def load_upstream(self, model: str, version: str) -> Upstream:
        """The upstream of ``model``/``version``, from the cache or the registry (blocking).

        Raises:
            VersionNotFoundError: no such version.
            UnservableVersion: its tags do not say how to reach it.
        """
        cached = self._upstreams.get((model, version))
        if cached is not None:
            return cached
        upstream = upstream_for(self.store.get_version(model, version), self.endpoints)
        self._upstreams[(model, version)] = upstream
        return upstream

    def refresh(self) -> list[str]:
        """Rebuild every served model's table; return the models whose routing changed.

        A model whose registry or state read fails keeps its previous table (and is retried at
        the next refresh); the failure is logged and counted.
        """
        changed = []
        with self._refreshing:
            for model in self.models:
                try:
                    if self._refresh_model(model):
                        changed.append(model)
                except TuneopsError as exc:
                    self.refresh_failures += 1
                    self._complaints.failed(
                        model, f"routing refresh of {model} failed, keeping its last table: {exc.one_line()}"
                    )
                else:
                    self._complaints.recovered(model, f"routing refresh of {model}")
            self.refreshed_at = time.time()
        return changed

    def _refresh_model(self, model: str) -> bool:
        aliases = self.store.aliases(model)
        state = self.routing.get(model)
        challenger = RoutingTable.derive(model, aliases).challenger
        table = RoutingTable.derive(
            model,
            aliases,
            weight=state.weight_for(challenger),
            strategy=cast(Strategy, state.strategy),
            experiment_id=state.experiment_id,
        )
        now = time.monotonic()
        for version in {table.champion, table.challenger} - {None}:
            assert version is not None
            if now - self._read_at.get((model, version), float("-inf")) < TAGS_MAX_AGE_SECONDS:
                continue
            try:
                self._upstreams[(model, version)] = upstream_for(
                    self.store.get_version(model, version), self.endpoints
                )
            except UnservableVersion as exc:
                self._complaints.failed(f"{model}/{version}", f"cannot serve {model}/{version}: {exc}")
            else:
                self._read_at[(model, version)] = now
                self._complaints.recovered(f"{model}/{version}", f"serving {model}/{version}")
        previous = self._tables.get(model)
        self._tables[model] = table
        if self._recorded.get(model) != aliases:
            self.ledger_moves += len(reconcile(self.store, self.ledger, model, source=LEDGER_SOURCE))
            self.routing.observe_aliases(
                model, table.champion, table.challenger, actor=OBSERVED_ACTOR, reason=OBSERVED_REASON
            )
            self._recorded[model] = aliases
        return bool(previous != table)


class Complaints:
    """Log a failure that repeats every refresh (every 2 s) once, then once a minute, then its end.

    A tracking server that is down for an hour should leave a handful of lines in the gateway's
    log, not 1,800; the count of failures stays exact in ``refresh_failures`` (``/metrics``).
    """

    def __init__(self, repeat_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.repeat_seconds = repeat_seconds
        self._clock = clock
        self._streaks: dict[str, tuple[int, float]] = {}

    def failed(self, key: str, message: str) -> bool:
        """Count one failure of ``key``; log it when it starts a streak or a minute has passed."""
        count, last_logged = self._streaks.get(key, (0, float("-inf")))
        now = self._clock()
        count += 1
        logged = now - last_logged >= self.repeat_seconds
        if logged:
            suffix = f" ({count} times in a row)" if count > 1 else ""
            log.warning("%s%s", message, suffix)
            last_logged = now
        self._streaks[key] = (count, last_logged)
        return logged

    def recovered(self, key: str, what: str) -> bool:
        """End ``key``'s streak; say so once when there was one."""
        streak = self._streaks.pop(key, None)
        if streak is None:
            return False
        log.warning("%s works again after %d failure(s)", what, streak[0])
        return True
