"""Orchestration overhead of ``tuneops run``: wall time minus the time inside training and generation.

Runs the real command on a fresh copy of the example project (embedded default: local tuning
service, SQLite MLflow, Prefect's ephemeral server, local data store), then reads from MLflow:

- ``provider_seconds`` of the fine-tune run: queue + training time as the service reports it;
- ``<model>.generation_seconds`` of the evaluation run: wall time spent answering test rows.

Overhead = total wall time - training - generation: Prefect (the project's server start, task
bookkeeping), starting the local service, versioning, MLflow logging, scoring, registration,
and the polling latency of the wait. Goal (issue 6): under 15 s and under 20% of the run.

Built once per machine, before timing starts, as ``scripts/setup`` does: the base model and the
migrated database templates new projects start from (``tuneops setup``). What building the
templates costs is measured too, in a throwaway cache, and printed as the one-time cost a
machine's very first project pays on top.

    python bench/orchestration_bench.py            # the example spec as shipped
    python bench/orchestration_bench.py --epochs 2 # quicker
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tuneops.registry.mlflow_store import RegistryStore
from tuneops.serving.local.tinymodel import TINY_MODEL_ID, ensure_tiny_model
from tuneops.settings import QUIET_ENVIRONMENT

CACHE = Path(__file__).resolve().parent / "out" / "tiny-default"


def run_tuneops(project: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tuneops.cli.main", "run", "--no-progress"],
        cwd=project,
        env={**os.environ, **QUIET_ENVIRONMENT},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"tuneops run failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def inside_model_time(project: Path, model_name: str) -> tuple[float, float]:
    """(training seconds, generation seconds) as logged by the run's stages."""
    store = RegistryStore(f"sqlite:///{project / '.tuneops' / 'mlflow.db'}")
    runs = store.find_runs(store.ensure_experiment(model_name), {})
    training = sum(r.metrics.get("provider_seconds", 0.0) for r in runs if "tuneops.kind" in r.tags)
    generation = sum(
        value
        for r in runs
        if r.tags.get("tuneops.stage") == "evaluation"
        for key, value in r.metrics.items()
        if key.endswith(".generation_seconds")
    )
    return training, generation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="override finetune.hyperparameters.n_epochs")
    args = parser.parse_args()

    base = ensure_tiny_model(CACHE / TINY_MODEL_ID, "default")
    setup = [sys.executable, "-m", "tuneops.cli.main", "setup", "--machine-only"]
    subprocess.run(setup, check=True, capture_output=True, env={**os.environ, **QUIET_ENVIRONMENT})
    with tempfile.TemporaryDirectory(prefix="tuneops-bench-cache-") as cold_cache:
        started = time.perf_counter()
        cold = {**os.environ, **QUIET_ENVIRONMENT, "XDG_CACHE_HOME": cold_cache}
        subprocess.run(setup, check=True, capture_output=True, env=cold)
        templates_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="tuneops-bench-") as tmp:
        project = Path(tmp) / "project"
        init = [sys.executable, "-m", "tuneops.cli.main", "init", str(project)]
        subprocess.run(init, check=True, capture_output=True)
        shutil.copytree(base, project / ".tuneops" / "models" / "base" / TINY_MODEL_ID)
        spec = project / "tuneops.yaml"
        if args.epochs:
            spec.write_text(re.sub(r"n_epochs: \d+", f"n_epochs: {args.epochs}", spec.read_text()))
        model_name = re.search(r"^  name: (\S+)", spec.read_text(), re.M).group(1)  # type: ignore[union-attr]

        fresh = run_tuneops(project)
        fresh_inside = inside_model_time(project, model_name)
        rerun = run_tuneops(project)
        # New data in an existing project: the recurring case (scheduled or drift-triggered retraining).
        train = project / "claims" / "train.jsonl"
        train.write_text("".join(train.read_text().splitlines(keepends=True)[:-1]))
        again = run_tuneops(project)
        again_inside = tuple(
            b - a for a, b in zip(fresh_inside, inside_model_time(project, model_name), strict=True)
        )

    print(
        f"one-time per machine: building the database templates took {templates_seconds:.1f} s "
        "(scripts/setup does it; without it a machine's first project pays this on its first run)"
    )
    report("tuneops run, fresh project", fresh, *fresh_inside)
    report("tuneops run, new data in the same project", again, *again_inside)
    print(f"re-run, unchanged inputs: {rerun:7.1f} s wall (no training, no generation, nothing registered)")


def report(title: str, total: float, training: float, generation: float) -> None:
    overhead = total - training - generation
    print(f"{title}: {total:7.1f} s wall")
    print(f"  inside training (service):  {training:7.1f} s")
    print(f"  inside generation (eval):   {generation:7.1f} s")
    share = overhead / total
    print(f"  orchestration overhead:     {overhead:7.1f} s = {share:.1%} of the run (goal < 15 s, < 20%)")


if __name__ == "__main__":
    main()
