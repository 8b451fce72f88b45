"""Entry point of the ``tuneops`` command: wires the sub-commands and turns errors into exit codes.

User mistakes (``UserError``) print one line and exit 1 (2 for usage); other tuneops errors print
one line and exit 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

import typer
from rich.markup import escape

from tuneops import __version__
from tuneops.cli import (
    data,
    deploy,
    evaluate,
    finetune,
    monitor,
    project,
    registry,
    rollout,
    run,
    serve,
    setup,
    traffic,
    up,
)
from tuneops.cli.common import err_console
from tuneops.errors import TuneopsError
from tuneops.settings import quiet_third_parties

app = typer.Typer(
    name="tuneops",
    help=(
        "MLOps for fine-tuned LLMs: version chat datasets, fine-tune through any OpenAI-compatible "
        "provider, evaluate against the base model behind quality gates, register in MLflow, and "
        "audit the lineage of what serves. Every command works on ./tuneops.yaml unless --spec says "
        "otherwise."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tuneops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """MLOps for fine-tuned LLMs."""


for module in (
    project,
    setup,
    data,
    serve,
    finetune,
    evaluate,
    registry,
    run,
    monitor,
    rollout,
    deploy,
    traffic,
    up,
):
    module.register(app)


def main() -> None:
    """Run the CLI; map tuneops errors to one line on stderr and an exit code."""
    quiet_third_parties()
    try:
        app()
    except TuneopsError as exc:
        err_console.print("[red]error:[/red]", escape(exc.one_line()), soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


def entry() -> None:
    """The installed ``tuneops`` command: :func:`main`, then leave without tearing the interpreter
    down module by module.

    After a run, freeing every object of MLflow, Prefect, pandas and friends takes 1-2 s of
    nothing useful. Exit handlers still run (log handlers flush, servers stop) and output is
    flushed; only the teardown is skipped. Tests call :func:`main`, which exits normally.
    """
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = _exit_code(stop.code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing left to say
            stream.flush()
    os._exit(code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints the message and exits 1
    return 1


if __name__ == "__main__":
    entry()
