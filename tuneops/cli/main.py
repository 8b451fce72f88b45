"""Entry point of the ``tuneops`` command: wires the sub-commands and turns errors into exit codes.

User mistakes (``UserError``) print one line and exit 1 (2 for usage); other tuneops errors print
one line and exit 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from tuneops import __version__
from tuneops.cli import data, evaluate, finetune, project, registry, run, serve
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


for module in (project, data, serve, finetune, evaluate, registry, run):
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


if __name__ == "__main__":
    main()
