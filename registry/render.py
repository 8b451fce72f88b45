"""Human renderings of lineage and the ledger (rich); the JSON form lives on ``Lineage`` itself."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from tuneops.registry.ancestry import CheckpointLineage, ParentLineage
from tuneops.registry.lineage import Lineage, Routing, ServedRequest, champion_rollout
from tuneops.registry.trigger import Trigger
from tuneops.registry.types import LedgerEntry

SHOWN_REQUEST_IDS = 50


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def _kv(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"


def _n(value: object) -> str:
    return "?" if value is None else str(value)


def _v(version: str | None) -> str:
    return version if version is not None else "(unset)"


def lineage_tree(
    lineage: Lineage, *, mlflow_ui_url: str | None = None, prefect_ui_url: str | None = None
) -> Tree:
    """The lineage as a tree, top to bottom in the order the question is asked."""
    head = f"[bold]{escape(lineage.ref)}[/bold]"
    if lineage.at:
        head += f" at {_when(lineage.at)}"
    root = Tree(head)
    if lineage.request is not None:
        _request_node(root, lineage.request)
    if lineage.routing is not None:
        _routing_node(root, lineage.routing)
    version = root.add(
        f"version [bold]{lineage.version}[/bold]  aliases now: {', '.join(lineage.version_aliases) or '-'}"
        f"  registered {_when(lineage.version_created_at)}"
    )
    if mlflow_ui_url:
        version.add(
            f"MLflow: {mlflow_ui_url.rstrip('/')}/#/models/{lineage.model}/versions/{lineage.version}"
        )
    ft = lineage.finetune
    job = version.add(f"fine-tune job [bold]{escape(ft.job_id or '?')}[/bold] ({escape(ft.provider or '?')})")
    job.add(
        f"base model: {escape(ft.base_model or '?')}  ->  endpoint model: {escape(ft.endpoint_model or '?')}"
    )
    job.add(f"hyperparameters: {escape(_kv(ft.hyperparameters))}")
    cost = f"{ft.estimated_cost:.4f}" if ft.estimated_cost is not None else "?"
    job.add(f"trained tokens: {_n(ft.trained_tokens)}  estimated cost: {cost}")
    if ft.run_id:
        job.add(f"MLflow run: {ft.run_id}")
    if lineage.checkpoint is not None:
        _checkpoint_node(job, lineage.checkpoint)
    if lineage.parent is not None:
        _parent_node(job, lineage.parent, lineage.model)
    ds = lineage.dataset
    data = job.add(
        f"dataset [bold]{escape(ds.name or '?')}@{(ds.digest or '?')[:12]}[/bold]"
        f"  rows: {_n(ds.rows)}  tokens: {_n(ds.tokens)}"
    )
    if ds.uri:
        data.add(f"store: {escape(ds.uri)}")
    for split in ds.splits:
        data.add(
            f"{split.split}: sha256 {split.sha256[:16]}…  rows {_n(split.rows)}"
            f"  tokens {_n(split.tokens)}  {escape(split.uri or '')}"
        )
    if ds.provenance:
        _provenance_node(data, ds.provenance)
    if ds.validation_report:
        data.add(f"validation report: {escape(json.dumps(ds.validation_report, sort_keys=True)[:300])}")
    ev = lineage.evaluation
    colour = {"passed": "green", "failed": "red"}.get(ev.gate or "", "yellow")
    gate = f"[{colour}]{escape(ev.gate or 'not recorded')}[/{colour}]"
    evaluation = version.add(f"evaluation run {escape(ev.run_id or '?')}  gate: {gate}")
    for reason in ev.gate_reasons:
        evaluation.add(f"reason: {escape(reason)}")
    if ev.metrics:
        evaluation.add(f"metrics: {escape(_kv({k: round(v, 4) for k, v in ev.metrics.items()}))}")
    flow = lineage.flow_run_id or "not recorded"
    flow_node = version.add(f"Prefect flow run: {escape(flow)}")
    if prefect_ui_url and lineage.flow_run_id:
        flow_node.add(f"{prefect_ui_url.rstrip('/')}/runs/flow-run/{lineage.flow_run_id}")
    if lineage.trigger is not None:
        _trigger_node(flow_node, lineage.trigger, prefect_ui_url)
    cr = champion_rollout(lineage.ledger, lineage.version)
    if cr is not None:
        version.add(
            f"made champion by rollout [bold]{cr.rollout_id}[/bold] {_when(cr.at)} ({escape(cr.actor)}):"
            f" {escape(cr.reason)}  (tuneops rollout status {escape(lineage.model)})"
        )
    history = root.add(f"ledger ({len(lineage.ledger)} entries)")
    for entry in lineage.ledger:
        history.add(_entry_line(entry))
    for warning in lineage.warnings:
        root.add(f"[yellow]warning:[/yellow] {escape(warning)}")
    return root


def _provenance_node(parent: Tree, p: dict[str, Any]) -> None:
    """Which reviewed rows the model learnt from: production requests (by id) and synthetic rows."""
    origins = p.get("by_origin") or {}
    reviewers = ", ".join(p.get("reviewers") or []) or "?"
    node = parent.add(
        f"reviewed rows: {_n(p.get('rows'))}  ({escape(_kv(origins))}; edited {_n(p.get('edited'))})"
        f"  reviewers: {escape(reviewers)}"
    )
    if origins.get("synthetic"):
        teachers = ", ".join(p.get("teacher_models") or []) or "?"
        templates = ", ".join(p.get("prompt_templates") or []) or "?"
        node.add(
            f"synthetic: {origins['synthetic']} rows, teacher {escape(teachers)}, prompt {escape(templates)}"
        )
    ids = [str(i) for i in p.get("request_ids") or []]
    if ids:
        total = int(p.get("request_ids_total") or len(ids))
        shown = ", ".join(ids[:SHOWN_REQUEST_IDS])
        more = (
            f" … {total - min(len(ids), SHOWN_REQUEST_IDS)} more in {p.get('file')}"
            if total > SHOWN_REQUEST_IDS
            else ""
        )
        node.add(f"production requests ({total}): {escape(shown)}{escape(more)}")


def _checkpoint_node(parent: Tree, ck: CheckpointLineage) -> None:
    which = ck.checkpoint or "?"
    where = ", ".join(
        part
        for part in (
            f"epoch {ck.epoch}" if ck.epoch else "",
            f"step {ck.step}" if ck.step is not None else "",
        )
        if part
    )
    node = parent.add(f"checkpoint: [bold]{escape(which)}[/bold]" + (f" ({where})" if where else ""))
    best = f"epoch {ck.best_epoch} (step {ck.best_step})" if ck.best_epoch else f"step {_n(ck.best_step)}"
    early = {True: "yes", False: "no", None: "?"}[ck.stopped_early]
    if ck.validation_loss_rise is None:
        check = "[yellow]no validation loss[/yellow]"
    elif ck.validation_loss_rise > 0:
        check = f"[yellow]validation loss {ck.validation_loss_rise:+.1%} vs best[/yellow]"
    else:
        check = "[green]at the best validation loss[/green]"
    node.add(f"best: {best}  stopped early: {early}  overfitting check: {check}")
    if ck.summary:
        node.add(escape(ck.summary))


def _parent_node(parent: Tree, p: ParentLineage, model: str) -> None:
    version = f"version [bold]{escape(p.version)}[/bold] " if p.version else ""
    node = parent.add(f"continued from {version}({escape(p.model)})")
    if p.dataset or p.train_digest:
        node.add(f"parent's data: {escape(p.dataset or '?')}  train sha256 {(p.train_digest or '?')[:16]}…")
    if p.version:
        node.add(f"its lineage: tuneops lineage {escape(model)}/{escape(p.version)}")


def _trigger_node(parent: Tree, trigger: Trigger, prefect_ui_url: str | None) -> None:
    """Why the flow run ran; for drift, the monitor run and drift report that caused it."""
    node = parent.add(f"triggered by: {escape(trigger.reason)}")
    if trigger.kind != "drift":
        return
    monitor = trigger.monitor_flow_run_id or "not recorded"
    run = node.add(f"monitor-drift flow run: {escape(monitor)}")
    if prefect_ui_url and trigger.monitor_flow_run_id:
        run.add(f"{prefect_ui_url.rstrip('/')}/runs/flow-run/{trigger.monitor_flow_run_id}")
    status = f" ({escape(trigger.drift_status)})" if trigger.drift_status else ""
    report = node.add(
        f"drift report run: {escape(trigger.drift_report_run_id or 'not recorded')}{status}"
        " (drift/report.md, drift/signals.png)"
    )
    if trigger.drift_summary and trigger.drift_summary not in trigger.reason:
        report.add(escape(trigger.drift_summary))


def _pct(share: float | None) -> str:
    return "?" if share is None else f"{share * 100:g}%"


def _request_node(root: Tree, request: ServedRequest) -> None:
    node = root.add(
        f"request [bold]{escape(request.request_id)}[/bold] {_when(request.at)}: answered by version"
        f" [bold]{_v(request.version)}[/bold] (arm {escape(request.arm or '?')},"
        f" share then {_pct(request.share)}, challenger weight then"
        f" {'?' if request.weight is None else f'{request.weight / 100:g}%'}) status {request.status_code}"
    )
    for attempt in request.attempts:
        error = f"  error {escape(attempt.error_kind)}" if attempt.error_kind else ""
        node.add(
            f"{attempt.role}: version {_v(attempt.version)} arm {escape(attempt.arm or '?')}"
            f" status {attempt.status_code} {attempt.latency_ms:.1f} ms{error}"
        )
    if request.feedback_score is not None:
        node.add(f"feedback score: {request.feedback_score:g}")


def _routing_node(root: Tree, routing: Routing) -> None:
    shares = ", ".join(f"version {v}: {_pct(s)}" for v, s in routing.shares.items()) or "nothing served"
    node = root.add(f"serving at {_when(routing.at)}: [bold]{shares}[/bold]")
    node.add(
        f"since {_when(routing.since)} ({routing.cause}, by {escape(routing.actor)}): champion"
        f" {_v(routing.champion)}, challenger {_v(routing.challenger)} at {routing.weight / 100:g}%,"
        f" strategy {escape(routing.strategy)}"
        + (f", experiment {escape(routing.experiment_id)}" if routing.experiment_id else "")
    )


def _entry_line(entry: LedgerEntry) -> str:
    return (
        f"{_when(entry.at)}  {escape(entry.alias)}: {_v(entry.from_version)} -> {_v(entry.to_version)}"
        f"  by {escape(entry.actor)} ({entry.source})  {escape(entry.reason)}"
    )


def ledger_table(model: str, entries: list[LedgerEntry]) -> Table:
    """The ledger of one model, oldest first."""
    table = Table(title=f"promotion ledger of {model}")
    for column in ("#", "at (UTC)", "alias", "from", "to", "actor", "source", "reason"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            str(e.id),
            _when(e.at),
            e.alias,
            _v(e.from_version),
            _v(e.to_version),
            escape(e.actor),
            e.source,
            escape(e.reason),
        )
    return table
