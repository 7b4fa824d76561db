"""The `greenkd` command line: parses flags, calls the library, prints; one module per command group.

Heavy libraries (TensorFlow, pandas, plotly) are imported inside the commands
that need them, so `greenkd profile` and `greenkd sensors` start fast.
"""

from __future__ import annotations

import sys

import typer

from greenkd.cli import distill, plan, report, sweep
from greenkd.errors import GreenkdError
from profilers import cli as profilers_cli

app = typer.Typer(
    name="greenkd",
    help="Energy-aware parallel blockwise knowledge distillation: distill, profile, sweep, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# `greenkd profile -- CMD` and `greenkd sensors` (profilers/cli.py; no TensorFlow on this path).
profilers_cli.register(app)
# `greenkd distill`, `greenkd targets`, `greenkd teacher train` (distill.py), `greenkd sweep`
# (sweep.py), `greenkd report` (report.py), `greenkd plan` (plan.py).
for commands in (distill, sweep, report, plan):
    commands.register(app)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except GreenkdError as exc:
        print(f"greenkd: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("greenkd: interrupted; results written so far are kept on disk", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
