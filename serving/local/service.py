"""The local service's engine: models, files and fine-tuning jobs, independent of HTTP.

``LocalService`` owns the SQLite store, the folders under ``home`` and one worker thread that runs
queued jobs one at a time, outside the request path. On start it recovers jobs a previous process
left ``running`` (a crash or SIGKILL): each is resumed from its newest epoch checkpoint, or failed
with a clear reason after repeated crashes, never silently forgotten.

Layout of ``home`` (the settings' ``models_dir``)::

    service.db                 files, jobs, events, checkpoints (SQLite, WAL)
    files/<file-id>            uploaded and result files
    base/<model-id>/           base models (``tuneops-tiny`` and ``smollm2-135m-instruct`` are built
                               here on first use)
    jobs/<job-id>/             checkpoints/epoch-N/ and the final adapter/
"""

from __future__ import annotations

import csv
import fcntl
import io
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneops.errors import ServiceError
from tuneops.serving.local.chatdata import ChatFileError, parse_chat_jsonl
from tuneops.serving.local.pretrained import (
    SMOLLM2_MODEL_ID,
    PackageMissing,
    build_problem,
    ensure_smollm2,
    gguf_source,
)
from tuneops.serving.local.rules import (
    MIN_TRAINING_EXAMPLES,
    ApiError,
    Hyperparameters,
    RequestedHyperparameters,
    checkpoint_model_name,
    fine_tuned_model_name,
    metadata_matches,
    new_id,
    paginate,
    parse_fine_tuned_name,
    parse_hyperparameters,
    resolve_hyperparameters,
    validate_metadata,
    validate_suffix,
)
from tuneops.serving.local.store import CheckpointRecord, FileRecord, ServiceStore
from tuneops.serving.local.tinymodel import TINY_MODEL_ID, ensure_tiny_model, is_built
from tuneops.serving.local.training import TrainingCallbacks, TrainingCancelled, latest_checkpoint

log = logging.getLogger("tuneops.serving.local")
MAX_RESUMES = 3
FILE_PURPOSES = ("fine-tune", "fine-tune-results", "assistants", "batch", "user_data", "vision", "evals")


@dataclass(frozen=True)
class ServiceConfig:
    """How one service instance runs; built by ``__main__`` from its command line."""

    home: Path
    api_key: str | None = None
    base_model_dirs: tuple[Path, ...] = ()
    tiny_profile: str = "default"
    max_file_bytes: int = 64 * 1024 * 1024
    max_request_bytes: int = 8 * 1024 * 1024
    base_learning_rate: float = 1e-2  # LoRA on tiny models: 3e-2 diverges, 2e-3 barely moves
    torch_threads: int | None = 1
    max_loaded_models: int = 4
    extra: dict[str, Any] = field(default_factory=dict)


class LocalService:
    """Files, jobs, models and the training worker of one service home."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.home = config.home.resolve()
        self.files_dir = self.home / "files"
        self.jobs_dir = self.home / "jobs"
        self.base_dir = self.home / "base"
        for folder in (self.files_dir, self.jobs_dir, self.base_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.store = ServiceStore(self.home / "service.db")
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._cancel_requested: set[str] = set()
        self._build_lock = threading.Lock()  # one base-model build at a time
        self._status_lock = threading.Lock()  # job status transitions: worker vs cancel
        self._worker: threading.Thread | None = None
        self._lock_file: Any = None
        self._base_cache: tuple[int, dict[str, Path]] | None = None
        self._fine_tuned: dict[str, Path] = {}  # finished fine-tunes never change: cache lookups
        self.created = int(time.time())

    # lifecycle
    def start(self) -> None:
        """Take the home's lock, recover interrupted jobs and start the worker thread.

        The lock (released by the kernel even on SIGKILL) keeps a second service off the same
        home, where two workers would train the same queued job twice.
        """
        self._lock_file = (self.home / "service.lock").open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_file.close()
            raise ServiceError(
                f"another tuneops service already uses {self.home}",
                hint="stop it, or give this one its own home",
            ) from exc
        self.recover()
        self._worker = threading.Thread(target=self._work, name="tuneops-finetune-worker", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 30) -> None:
        """Stop the worker at its next step; a running job stays ``running`` and resumes next start."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
        self.store.close()
        if self._lock_file is not None:
            self._lock_file.close()

    def recover(self) -> None:
        for job_id in self.store.job_ids_with_status(["running", "validating_files"]):
            job, internal = self._job(job_id)
            internal["resumes"] = internal.get("resumes", 0) + 1
            checkpoint = latest_checkpoint(self.jobs_dir / job_id)
            if internal["resumes"] > MAX_RESUMES:
                self._fail(
                    job_id,
                    "service_restarted",
                    f"The service stopped during this job {MAX_RESUMES} times; giving up. Create a new job.",
                    internal=internal,
                )
                continue
            where = (
                f"from the checkpoint of {checkpoint.name}"
                if checkpoint
                else "from the start (no checkpoint yet)"
            )
            self.store.update_job(job_id, status="queued", internal=internal)
            self._event(
                job_id,
                f"The service restarted while this job was {job['status']}; it resumes {where}",
                level="warn",
            )

    # models
    def base_models(self) -> dict[str, Path]:
        """Base model ids and folders: the built-in two, folders under ``base/``, ``--base-model-dir``s."""
        stamp = self.base_dir.stat().st_mtime_ns  # re-list only when a folder was added or removed
        if self._base_cache is not None and self._base_cache[0] == stamp:
            return self._base_cache[1]
        found = {
            TINY_MODEL_ID: self.base_dir / TINY_MODEL_ID,
            SMOLLM2_MODEL_ID: self.base_dir / SMOLLM2_MODEL_ID,
        }
        for folder in sorted(self.base_dir.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and (folder / "config.json").is_file():
                found[folder.name] = folder
        for folder in self.config.base_model_dirs:
            found[folder.name] = folder.resolve()
        self._base_cache = (stamp, found)
        return found

    def base_model_dir(self, model_id: str, progress: Callable[[str], None] | None = None) -> Path:
        """The folder of a base model, building a built-in one first if needed.

        Build progress goes to the log and, when given, to ``progress`` (a job's events).
        """
        folder = self.base_models().get(model_id)
        if folder is None:
            raise _model_not_found(model_id)
        if folder != self.base_dir / model_id or not self.needs_build(model_id):
            return folder

        def say(line: str) -> None:
            log.info(line)
            if progress is not None:
                progress(line)

        with self._build_lock:
            if model_id == TINY_MODEL_ID:
                ensure_tiny_model(folder, self.config.tiny_profile, log=say)
            else:
                try:
                    ensure_smollm2(folder, log=say)
                except PackageMissing as exc:
                    raise _package_missing(exc) from exc
        return folder

    def needs_build(self, model_id: str) -> bool:
        """True when a built-in base model is not (completely) built in this home yet."""
        folder = self.base_dir / model_id
        if model_id == TINY_MODEL_ID:
            return not is_built(folder)
        if model_id == SMOLLM2_MODEL_ID:
            return build_problem(folder) is not None
        return False

    def list_models(self) -> list[dict[str, Any]]:
        models = [
            {"id": name, "object": "model", "created": self.created, "owned_by": "tuneops"}
            for name in self.base_models()
        ]
        for job in reversed(self.store.list_jobs()):
            if job["status"] == "succeeded" and job.get("fine_tuned_model"):
                models.append(
                    {
                        "id": job["fine_tuned_model"],
                        "object": "model",
                        "created": job["finished_at"],
                        "owned_by": job["organization_id"],
                    }
                )
        return models

    def resolve_model(self, name: str) -> tuple[Path, Path | None]:
        """(base folder, adapter folder or None) for a model id the API was given."""
        parsed = parse_fine_tuned_name(name)
        if parsed is None:
            return self.base_model_dir(name), None
        adapter = self.adapter_dir(name)
        if adapter is None:
            raise _model_not_found(name)
        return self.base_model_dir(parsed.base), adapter

    def adapter_dir(self, name: str) -> Path | None:
        """The adapter folder of a fine-tune (or one of its checkpoints) of this service, else None.

        A fine-tuned name carries its root base model (``ft:<base>:...``), also for a fine-tune
        that continued another one, so the adapter always applies to that base.
        """
        parsed = parse_fine_tuned_name(name)
        if parsed is None:
            return None
        if parsed.checkpoint_step is not None:
            checkpoint = self.store.checkpoint_by_model(name)
            return Path(checkpoint.path) if checkpoint is not None else None
        known = self._fine_tuned.get(name)
        if known is None:
            for job in self.store.list_jobs():
                if job.get("fine_tuned_model") == name and job["status"] == "succeeded":
                    known = self._fine_tuned[name] = self.jobs_dir / job["id"] / "adapter"
                    break
        return known

    # files
    def create_file(self, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        if purpose not in FILE_PURPOSES:
            raise ApiError(
                f"Invalid purpose {purpose!r}: expected one of {', '.join(FILE_PURPOSES)}.", param="purpose"
            )
        if len(data) > self.config.max_file_bytes:
            raise ApiError(
                f"File is {len(data)} bytes; the limit is {self.config.max_file_bytes}.",
                status_code=413,
                param="file",
                code="file_too_large",
            )
        if purpose == "fine-tune":
            if not filename.endswith(".jsonl"):
                raise ApiError(
                    "Fine-tuning files must be JSON Lines with a .jsonl name.",
                    param="file",
                    code="invalid_file_format",
                )
            try:
                parse_chat_jsonl(data)
            except ChatFileError as exc:
                raise ApiError(
                    f"Invalid file format for fine-tuning: {exc}", param="file", code="invalid_file_format"
                ) from exc
        return self._save_file(filename, purpose, data).public()

    def _save_file(self, filename: str, purpose: str, data: bytes) -> FileRecord:
        file_id = new_id("file-")
        path = self.files_dir / file_id
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.rename(path)
        record = FileRecord(file_id, int(time.time()), filename, purpose, len(data), str(path))
        self.store.add_file(record)
        return record

    def get_file(self, file_id: str) -> FileRecord:
        record = self.store.get_file(file_id)
        if record is None:
            raise ApiError(
                f"No such File object: {file_id}", status_code=404, param="id", code="file_not_found"
            )
        return record

    def list_files(self, *, purpose: str | None, after: str | None, limit: int, order: str) -> dict[str, Any]:
        records = [r for r in self.store.list_files() if purpose is None or r.purpose == purpose]
        if order == "desc":
            records.reverse()
        elif order != "asc":
            raise ApiError("order must be 'asc' or 'desc'.", param="order")
        page, more = paginate(records, after=after, limit=limit, key=lambda r: r.id)
        return {
            "object": "list",
            "data": [r.public() for r in page],
            "has_more": more,
            "first_id": page[0].id if page else "",
            "last_id": page[-1].id if page else "",
        }

    def delete_file(self, file_id: str) -> dict[str, Any]:
        record = self.get_file(file_id)
        self.store.delete_file(file_id)
        Path(record.path).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def file_content(self, file_id: str) -> bytes:
        return Path(self.get_file(file_id).path).read_bytes()

    # jobs
    def create_job(self, body: Mapping[str, Any]) -> dict[str, Any]:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError("model is required.", param="model", code="missing_required_parameter")
        parsed = parse_fine_tuned_name(model)
        parent = self.adapter_dir(model) if parsed is not None else None  # continue that fine-tune
        base = parsed.base if parsed is not None else model
        if (parsed is not None and parent is None) or base not in self.base_models():
            raise ApiError(
                f"Model {model} is not available for fine-tuning or does not exist.",
                param="model",
                code="model_not_available",
            )
        if base == SMOLLM2_MODEL_ID and self.needs_build(base) and gguf_source() is None:
            raise _package_missing(PackageMissing())
        requested = parse_hyperparameters(body.get("hyperparameters"), body.get("method"))
        suffix = validate_suffix(body.get("suffix"))
        metadata = validate_metadata(body.get("metadata"))
        seed = body.get("seed")
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**31 - 1
        ):
            raise ApiError("seed must be an integer between 0 and 2147483647.", param="seed")
        training = self._training_file(body.get("training_file"), "training_file")
        validation = body.get("validation_file")
        if validation is not None:
            self._training_file(validation, "validation_file")
        job_id = new_id("ftjob-")
        job = {
            "object": "fine_tuning.job",
            "id": job_id,
            "model": model,
            "created_at": int(time.time()),
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": "tuneops",
            "result_files": [],
            "status": "validating_files",
            "validation_file": validation,
            "training_file": training.id,
            "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"},
            "trained_tokens": None,
            "error": None,
            "seed": seed if seed is not None else int(time.time()) % 2**31,
            "integrations": [],
            "estimated_finish": None,
            "metadata": metadata or None,
            "user_provided_suffix": suffix,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {}}},
        }
        internal: dict[str, Any] = {"requested": requested.as_dict(), "resumes": 0, "base": base}
        if parent is not None:
            internal["parent"] = {"model": model, "adapter": str(parent)}
        self.store.add_job(job, internal)
        self._event(job_id, "Validating training file: " + training.id)
        return self._validate_and_queue(job_id)

    def _training_file(self, file_id: object, param: str) -> FileRecord:
        if not isinstance(file_id, str) or not file_id:
            raise ApiError(f"{param} must be a file id.", param=param, code="missing_required_parameter")
        record = self.store.get_file(file_id)
        if record is None:
            raise ApiError(f"File {file_id} not found.", status_code=400, param=param, code="file_not_found")
        if record.purpose != "fine-tune":
            raise ApiError(
                f"File {file_id} has purpose {record.purpose!r}; fine-tuning needs 'fine-tune'.",
                param=param,
                code="invalid_file_purpose",
            )
        return record

    def _validate_and_queue(self, job_id: str) -> dict[str, Any]:
        """The ``validating_files`` step: parse both files; fail the job (not the request) on bad data."""
        job, internal = self._job(job_id)
        try:
            train = parse_chat_jsonl(
                self.file_content(job["training_file"]), min_examples=MIN_TRAINING_EXAMPLES
            )
            if job["validation_file"]:
                parse_chat_jsonl(self.file_content(job["validation_file"]), min_examples=1)
        except ChatFileError as exc:
            param = "validation_file" if "validation" in str(exc) else "training_file"
            return self._fail(
                job_id, "invalid_training_file", f"The training file is invalid: {exc}", param=param
            )
        except ApiError as exc:
            return self._fail(job_id, "invalid_training_file", exc.message, param="training_file")
        hp = resolve_hyperparameters(_requested(internal), len(train))
        internal["hyperparameters"] = hp.__dict__ | {"lora_target_modules": list(hp.lora_target_modules)}
        method = {"type": "supervised", "supervised": {"hyperparameters": hp.public()}}
        job = self.store.update_job(
            job_id, status="queued", hyperparameters=hp.public(), method=method, internal=internal
        )
        self._event(job_id, "Files validated, moving job to queued state")
        with self._wake:
            self._wake.notify_all()
        return job

    def _job(self, job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        found = self.store.get_job(job_id)
        if found is None:
            raise ApiError(
                f"Could not find fine tune: {job_id}",
                status_code=404,
                param="fine_tuning_job_id",
                code="fine_tune_not_found",
            )
        return found

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._job(job_id)[0]

    def list_jobs(self, *, after: str | None, limit: int, metadata: Mapping[str, str]) -> dict[str, Any]:
        jobs = [j for j in self.store.list_jobs() if metadata_matches(j.get("metadata") or {}, metadata)]
        page, more = paginate(jobs, after=after, limit=limit, key=lambda j: j["id"])
        return {"object": "list", "data": page, "has_more": more}

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        with self._status_lock:  # the worker may be moving this job from queued to running
            job = self.get_job(job_id)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                raise ApiError(
                    f"Job {job_id} has already {job['status']}; only unfinished jobs can be cancelled.",
                    param="fine_tuning_job_id",
                    code="invalid_job_state",
                )
            if job["status"] == "running":
                self._cancel_requested.add(job_id)
            job = self.store.update_job(job_id, status="cancelled", finished_at=int(time.time()))
        self._event(job_id, "Fine-tuning job cancelled")
        return job

    def list_events(self, job_id: str, *, after: str | None, limit: int) -> dict[str, Any]:
        self.get_job(job_id)
        page, more = paginate(self.store.list_events(job_id), after=after, limit=limit, key=lambda e: e["id"])
        return {"object": "list", "data": page, "has_more": more}

    def list_checkpoints(self, job_id: str, *, after: str | None, limit: int) -> dict[str, Any]:
        self.get_job(job_id)
        page, more = paginate(
            self.store.list_checkpoints(job_id), after=after, limit=limit, key=lambda c: c.id
        )
        return {
            "object": "list",
            "data": [c.public() for c in page],
            "has_more": more,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }

    # the worker
    def _work(self) -> None:
        while not self._stopping.is_set():
            queued = self.store.job_ids_with_status(["queued"])
            if not queued:
                with self._wake:
                    self._wake.wait(timeout=5)
                continue
            try:
                self.run_job(queued[0])
            except Exception as exc:  # the worker must survive any one job
                log.exception("job %s crashed the worker step", queued[0])
                self._fail(queued[0], "internal_error", f"Internal error while training: {exc}")

    def run_job(self, job_id: str) -> None:
        """Train one queued job to its end state (or leave it ``running`` when the service stops)."""
        from tuneops.serving.local.training import train_lora

        with self._status_lock:  # a cancel between the check and the update must not be lost
            job, internal = self._job(job_id)
            if job["status"] != "queued":
                return
            self.store.update_job(job_id, status="running")
        self._event(job_id, "Fine-tuning job started")
        try:
            train = parse_chat_jsonl(
                self.file_content(job["training_file"]), min_examples=MIN_TRAINING_EXAMPLES
            )
            validation = (
                parse_chat_jsonl(self.file_content(job["validation_file"])) if job["validation_file"] else []
            )
        except (ApiError, ChatFileError, OSError) as exc:
            self._fail(job_id, "invalid_training_file", f"A file of this job cannot be read any more: {exc}")
            return
        hp_fields = dict(internal["hyperparameters"])
        hp_fields["lora_target_modules"] = tuple(hp_fields["lora_target_modules"])
        hp = Hyperparameters(**hp_fields)
        base = internal.get("base", job["model"])
        parent = internal.get("parent")
        if self.needs_build(base):
            self._event(job_id, f"Building the base model {base} on first use (about a minute on a CPU)")
        try:
            base_dir = self.base_model_dir(base, progress=lambda line: self._event(job_id, line))
        except ApiError as exc:
            self._fail(job_id, "model_not_available", exc.message)
            return
        if parent is not None and not Path(parent["adapter"], "adapter_config.json").is_file():
            self._fail(job_id, "model_not_available", f"The adapter of {parent['model']} is gone.")
            return
        name = fine_tuned_model_name(base, job.get("user_provided_suffix"), job_id)

        def on_checkpoint(epoch: int, step: int, metrics: dict[str, float], path: Path) -> None:
            self.store.add_checkpoint(
                CheckpointRecord(
                    new_id("ftckpt_"),
                    job_id,
                    int(time.time()),
                    step,
                    epoch,
                    checkpoint_model_name(name, step),
                    metrics,
                    str(path),
                )
            )
            self._event(job_id, f"Checkpoint created at step {step}")

        callbacks = TrainingCallbacks(
            event=lambda message, data, kind: self._event(job_id, message, type=kind, data=data),
            checkpoint=on_checkpoint,
            cancelled=lambda: self._stopping.is_set() or job_id in self._cancel_requested,
        )
        try:
            result = train_lora(
                base_dir,
                train,
                validation,
                hp,
                self.jobs_dir / job_id,
                seed=job["seed"],
                base_learning_rate=self.config.base_learning_rate,
                callbacks=callbacks,
                init_adapter=Path(parent["adapter"]) if parent is not None else None,
            )
        except TrainingCancelled:
            self._cancel_requested.discard(job_id)
            return  # cancelled: already recorded; stopping: stays running and resumes on the next start
        except Exception as exc:
            log.exception("training of %s failed", job_id)
            self._fail(job_id, "training_failed", f"Training failed: {type(exc).__name__}: {exc}")
            return
        if self.get_job(job_id)["status"] != "running":
            return
        results = self._save_file(
            f"{job_id}-results.csv", "fine-tune-results", _metrics_csv(result.metrics_rows)
        )
        internal["result"] = {
            "base_valid_loss": result.base_valid_loss,
            "valid_losses": result.valid_losses,
            "best_epoch": result.best_epoch,
            "final_epoch": result.final_epoch,
            "stopped_early": result.stopped_early,
            "tokens_per_second": result.tokens_per_second,
        }
        self.store.update_job(
            job_id,
            status="succeeded",
            fine_tuned_model=name,
            finished_at=int(time.time()),
            trained_tokens=result.trained_tokens,
            result_files=[results.id],
            internal=internal,
        )
        best = self._checkpoint_of_epoch(job_id, result.best_epoch)
        self._event(
            job_id,
            f"New fine-tuned model created: {name} (the weights after epoch {result.final_epoch}; "
            f"the lowest validation loss was after epoch {result.best_epoch}"
            + (f", callable as {best}" if best else "")
            + (", training stopped early)" if result.stopped_early else ")"),
            data={
                "fine_tuned_model": name,
                "final_epoch": result.final_epoch,
                "best_epoch": result.best_epoch,
                "best_checkpoint": best,
                "stopped_early": result.stopped_early,
                "base_valid_loss": result.base_valid_loss,
                "valid_losses": result.valid_losses,
            },
        )
        self._event(job_id, "The job has successfully completed")

    def _checkpoint_of_epoch(self, job_id: str, epoch: int) -> str | None:
        for checkpoint in self.store.list_checkpoints(job_id):
            if checkpoint.epoch == epoch:
                return checkpoint.model_name
        return None

    def _fail(
        self,
        job_id: str,
        code: str,
        message: str,
        *,
        param: str | None = None,
        internal: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        job = self.store.update_job(
            job_id,
            status="failed",
            finished_at=int(time.time()),
            internal=internal,
            error={"code": code, "message": message, "param": param},
        )
        self._event(job_id, message, level="error")
        return job

    def _event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        self.store.add_event(new_id("ftevent-"), job_id, message, level=level, type=type, data=data)


def _requested(internal: Mapping[str, Any]) -> RequestedHyperparameters:
    raw = dict(internal["requested"])
    raw["lora"] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.get("lora", {}).items()}
    return RequestedHyperparameters(**raw)


def _metrics_csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(
        out,
        ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"],
        lineterminator="\n",
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue().encode()


def _package_missing(exc: PackageMissing) -> ApiError:
    return ApiError(str(exc), status_code=400, param="model", code="model_not_available")


def _model_not_found(name: str) -> ApiError:
    return ApiError(
        f"The model `{name}` does not exist or you do not have access to it.",
        status_code=404,
        param="model",
        code="model_not_found",
    )
