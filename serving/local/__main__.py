"""``python -m tuneops.serving.local``: run the local OpenAI-compatible service in this process.

The launcher (and ``tuneops serve models``) start it this way. The API key comes from
``--api-key`` or, preferably, the ``TUNEOPS_LOCAL_API_KEY`` environment variable, so it never shows
in the process list.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from tuneops.serving.local.tinymodel import PROFILES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tuneops.serving.local", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--home", type=Path, required=True, help="models dir: base models, jobs, files, database"
    )
    parser.add_argument("--api-key", default=None, help="require this bearer token (default: none)")
    parser.add_argument(
        "--base-model-dir",
        type=Path,
        action="append",
        default=[],
        help="a Hugging Face causal LM folder to serve and fine-tune (id = folder name)",
    )
    parser.add_argument(
        "--tiny-profile",
        choices=sorted(PROFILES),
        default=os.environ.get("TUNEOPS_TINY_PROFILE", "default"),
        help="size of the built-in base model (env TUNEOPS_TINY_PROFILE; 'test' builds in seconds)",
    )
    parser.add_argument("--max-file-mb", type=int, default=64)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=int(os.environ.get("TUNEOPS_TORCH_THREADS") or 0),
        help="CPU threads for torch (env TUNEOPS_TORCH_THREADS; 0 = torch's default, one per core, "
        "which SmolLM2 needs; the test suite sets 1, fastest for tiny models on a shared box)",
    )
    parser.add_argument("--prebuild", action="store_true", help="build tuneops-tiny before serving")
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from tuneops.settings import quiet_third_parties

    quiet_third_parties()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch
    import uvicorn

    from tuneops.serving.local.app import build_asgi
    from tuneops.serving.local.service import LocalService, ServiceConfig
    from tuneops.serving.local.tinymodel import TINY_MODEL_ID

    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    config = ServiceConfig(
        home=args.home,
        api_key=args.api_key or os.environ.get("TUNEOPS_LOCAL_API_KEY") or None,
        base_model_dirs=tuple(args.base_model_dir),
        tiny_profile=args.tiny_profile,
        max_file_bytes=args.max_file_mb * 1024 * 1024,
        torch_threads=args.torch_threads or None,
    )
    service = LocalService(config)
    if args.prebuild:
        service.base_model_dir(TINY_MODEL_ID)
    uvicorn.run(
        build_asgi(service),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
