"""The `greenkd` command line: parses flags, calls the library, prints.

Heavy libraries (TensorFlow, pandas, plotly) are imported inside the commands
that need them, so `greenkd profile` and `greenkd sensors` start fast.
"""

from __future__ import annotations

import sys

import typer

from greenkd.errors import GreenkdError

app = typer.Typer(
    name="greenkd",
    help="Energy-aware parallel blockwise knowledge distillation: distill, profile, sweep, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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
