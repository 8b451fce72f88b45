"""Registry commands: ``promote``, ``lineage``, ``ledger``, ``registry reconcile`` and
``registry deployments``.

Every command reconciles first, so alias moves made in the MLflow UI since the last look reach
the ledger before anything is decided or shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from tuneops.cli.common import DEFAULT_SPEC, SpecOption, console, err_console, settings_for
from tuneops.errors import UsageError
from tuneops.settings import TuneopsSettings


@contextmanager
def _registry(spec: Path) -> Iterator[tuple[Any, Any, TuneopsSettings]]:
    """The MLflow adapter and the ledger for the project of ``spec`` (imported lazily: MLflow is slow)."""
    from tuneops.registry.ledger import Ledger
    from tuneops.registry.mlflow_store import RegistryStore

    settings = settings_for(spec)
    assert settings.state_db_url is not None
    ledger = Ledger.open(settings.state_db_url)
    try:
        yield RegistryStore.from_settings(settings), ledger, settings
    finally:
        ledger.close()


def parse_at(text: str) -> datetime:
    """An ISO 8601 date or timestamp; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise UsageError(
            f"--at {text!r}: not an ISO 8601 time", hint="e.g. --at 2026-11-20T14:00:00Z or --at 2026-11-20"
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _manifest_reader(settings: TuneopsSettings) -> Any:
    def read(version_uri: str) -> dict[str, Any]:
        from tuneops.tasks.data.store import open_store

        store = open_store(version_uri, s3_endpoint_url=settings.s3_endpoint_url)
        return dict(json.loads(store.read_bytes("manifest.json")))

    return read


def promote(
    name: Annotated[str, typer.Argument(help="Registered model name (the spec's model.name).")],
    version: Annotated[str, typer.Argument(help="Model version number to promote.")],
    alias: Annotated[str, typer.Option("--alias", help="champion or challenger.")] = "challenger",
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded in the promotion ledger.")] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Allow a champion whose quality gate failed.")
    ] = False,
    spec: SpecOption = DEFAULT_SPEC,
) -> None:
    """Move an alias to a model version; moving champion keeps the old one as previous."""
    from tuneops.registry.promotion import promote as do_promote

    with _registry(spec) as (store, ledger, _):
        result = do_promote(store, ledger, name, version, alias, reason=reason, force=force)
    for entry in result.reconciled:
        err_console.print(
            f"[yellow]observed[/yellow] {entry.alias}: {entry.from_version} -> {entry.to_version} "
            "(moved outside tuneops; now in the ledger)"
        )
    if not result.changed:
        console.print(f"{name}@{alias} is already version {version}; nothing changed")
        return
    for move in result.moves:
        console.print(
            f"{name}@{move.alias}: {move.from_version or '(unset)'} -> {move.to_version or '(unset)'}"
        )


def lineage(
    ref: Annotated[
        str | None,
        typer.Argument(help="NAME, NAME@ALIAS or NAME/VERSION (NAME alone means @champion)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stable JSON form.")] = False,
    at: Annotated[
        str | None,
        typer.Option(
            "--at", help="Which version held the alias at this time, and what the gateway served then."
        ),
    ] = None,
    request: Annotated[
        str | None,
        typer.Option(
            "--request",
            help="A gateway request id (x-request-id): which version answered it, on which arm,"
            " at what weight, and how that version was made.",
        ),
    ] = None,
    spec: SpecOption = DEFAULT_SPEC,
) -> None:
    """Show how a model version was made: job, data, evaluation, flow run and alias history."""
    from tuneops.registry.conventions import parse_model_ref
    from tuneops.registry.lineage import build_lineage, build_request_lineage
    from tuneops.registry.promotion import reconcile
    from tuneops.registry.render import lineage_tree
    from tuneops.requestlog import RequestLog
    from tuneops.routing_state import RoutingState

    if request is not None and (ref is not None or at is not None):
        raise UsageError("--request names the request on its own", hint="drop NAME and --at")
    if request is None and ref is None:
        raise UsageError("name a model (NAME, NAME@ALIAS, NAME/VERSION) or a request (--request ID)")
    parsed = parse_model_ref(ref) if ref is not None else None
    if ref is not None and parsed is None:
        raise UsageError(f"{ref!r} is not a model reference", hint="use NAME, NAME@ALIAS or NAME/VERSION")
    when = parse_at(at) if at else None
    with _registry(spec) as (store, ledger, settings):
        assert settings.state_db_url is not None
        routing = RoutingState.open(settings.state_db_url)
        try:
            if request is not None:
                requests = RequestLog.open(settings.state_db_url)
                try:
                    found = requests.attempts(request)
                    if found:
                        reconcile(store, ledger, found[0].model)
                    result = build_request_lineage(
                        store, ledger, requests, routing, request, read_manifest=_manifest_reader(settings)
                    )
                finally:
                    requests.close()
            else:
                assert parsed is not None
                reconcile(store, ledger, parsed.name)
                result = build_lineage(
                    store,
                    ledger,
                    parsed,
                    at=when,
                    read_manifest=_manifest_reader(settings),
                    routing_state=routing,
                )
        finally:
            routing.close()
    if as_json:
        typer.echo(json.dumps(result.to_json_dict(), indent=2, sort_keys=True))
        return
    console.print(
        lineage_tree(result, mlflow_ui_url=settings.mlflow_ui_url, prefect_ui_url=settings.prefect_ui_url)
    )


def ledger(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    spec: SpecOption = DEFAULT_SPEC,
) -> None:
    """Show the promotion ledger of a model (every alias move, oldest first)."""
    from dataclasses import asdict

    from tuneops.registry.promotion import reconcile
    from tuneops.registry.render import ledger_table

    with _registry(spec) as (store, led, _):
        reconcile(store, led, name)
        entries = led.history(name)
    if as_json:
        rows = [{**asdict(e), "at": e.at.isoformat()} for e in entries]
        typer.echo(json.dumps(rows, indent=2))
        return
    console.print(ledger_table(name, entries))


registry_app = typer.Typer(
    help="Registry maintenance: reconcile the ledger with MLflow, receive its webhooks.", no_args_is_help=True
)


@registry_app.command("reconcile")
def reconcile_command(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models to reconcile (default: the spec's model).")
    ] = None,
    spec: SpecOption = DEFAULT_SPEC,
) -> None:
    """Record alias moves made outside tuneops (MLflow UI/API) in the promotion ledger."""
    from tuneops.registry.promotion import reconcile
    from tuneops.spec import load_spec

    if not names:
        names = [load_spec(spec)[0].model.name]
    with _registry(spec) as (store, led, _):
        for name in names:
            found = reconcile(store, led, name)
            for entry in found:
                console.print(f"{name}@{entry.alias}: {entry.from_version} -> {entry.to_version} (observed)")
            if not found:
                console.print(f"{name}: ledger up to date")


@registry_app.command("deployments")
def deployments_command(
    name: Annotated[str, typer.Argument(help="Registered model name (the spec's model.name).")],
    prune: Annotated[
        bool, typer.Option("--prune", help="Delete the deployments marked 'retire' (tuneops' own only).")
    ] = False,
    keep_deployments: Annotated[
        bool, typer.Option("--keep-deployments", help="Delete nothing, even with --prune.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    spec: SpecOption = DEFAULT_SPEC,
) -> None:
    """List the Azure deployments tuneops made for NAME, what each costs per hour, which are due.

    A deployment is due for retirement when its version failed the gate, or has not been
    champion/challenger/previous for provider.deployment_grace_hours. Deployments tuneops did
    not create are never listed or touched.
    """
    from rich.table import Table

    from tuneops.spec import load_spec
    from tuneops.tasks.finetune.tasks import retire_deployments_for

    loaded, _ = load_spec(spec)
    if loaded.provider.kind != "azure-openai":
        console.print(f"{name}: provider {loaded.provider.kind} needs no deployments")
        return
    if loaded.model.name != name:
        loaded = loaded.model_copy(update={"model": loaded.model.model_copy(update={"name": name})})
    report = retire_deployments_for(loaded, settings_for(spec), keep=keep_deployments or not prune)
    price = report.price_per_hour
    rows = [
        {
            "deployment": v.deployment.name,
            "version": v.version,
            "aliases": list(v.aliases),
            "gate": v.gate,
            "state": v.deployment.provisioning_state,
            "created_at": v.deployment.created_at,
            "price_per_hour": price,
            "verdict": (
                "deleted" if v.deployment.name in report.deleted else "retire" if v.retire else "keep"
            ),
            "reason": v.reason,
        }
        for v in report.verdicts
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"deployments tuneops made for {name}")
    for column in ("deployment", "version", "aliases", "gate", "state", "$/hour", "verdict", "why"):
        table.add_column(column)
    for row in rows:
        cost = f"{price:.2f}" if price is not None else "set provider.deployment_price_per_hour"
        table.add_row(
            str(row["deployment"]), str(row["version"] or "-"), ",".join(row["aliases"]) or "-",
            str(row["gate"] or "-"), str(row["state"] or "-"), cost, str(row["verdict"]), str(row["reason"]),
        )  # fmt: skip
    console.print(table)
    if price is not None and rows:
        live = [r for r in rows if r["verdict"] != "deleted"]
        console.print(f"{len(live)} deployment(s) at {price:.2f}/hour each: {len(live) * price:.2f}/hour")
    due = [r for r in rows if r["verdict"] == "retire"]
    if due and not prune:
        console.print(f"{len(due)} due for retirement: re-run with --prune to delete them")


@registry_app.command("webhook")
def webhook_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8790,
    public_url: Annotated[
        str | None, typer.Option(help="URL MLflow should call, if not http://HOST:PORT/mlflow-webhook.")
    ] = None,
    install: Annotated[
        bool, typer.Option(help="Create/repoint the 'tuneops-ledger' webhook in MLflow.")
    ] = True,
    spec: SpecOption = DEFAULT_SPEC,
) -> None:
    """Receive MLflow registry webhooks so UI alias moves reach the ledger at once (needs mlflow server)."""
    from tuneops.registry.webhooks import WEBHOOK_PATH, WebhookReceiver, install_webhook

    settings = settings_for(spec)
    if settings.webhook_secret is None or not settings.webhook_secret.get_secret_value():
        raise UsageError(
            "no webhook secret", hint="set TUNEOPS_WEBHOOK_SECRET (in the environment or .env) first"
        )
    secret = settings.webhook_secret.get_secret_value()
    with _registry(spec) as (store, led, _):
        receiver = WebhookReceiver(store, led, secret, host=host, port=port)
        url = public_url or receiver.url
        if install:
            install_webhook(store, url, secret)
        if not store.tracking_uri.startswith(("http://", "https://")):
            err_console.print(
                "[yellow]warning:[/yellow] MLflow fires webhooks only through 'mlflow server'; with "
                f"{store.tracking_uri} run 'tuneops registry reconcile' instead"
            )
        console.print(f"receiving MLflow alias events at {url} (path {WEBHOOK_PATH}); Ctrl-C stops")
        try:
            receiver.serve_forever()
        finally:
            receiver.server.server_close()


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("promote")(promote)
    app.command("lineage")(lineage)
    app.command("ledger")(ledger)
    app.add_typer(registry_app, name="registry")
