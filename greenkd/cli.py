"""The `greenkd` command line: parses flags, calls the library, prints.

Heavy libraries (TensorFlow, pandas, plotly) are imported inside the commands
that need them, so `greenkd profile` and `greenkd sensors` start fast.
"""

from __future__ import annotations

import sys

import typer

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


@app.command("report")
def report_command(
    results: str = typer.Argument(..., help="A sweep directory (results/<sweep>) or a results directory holding sweeps."),
    out: str = typer.Option("reports", "--out", help="Where to write <sweep>/report.html and index.html."),
    open_report: bool = typer.Option(False, "--open", help="Open the report (or the index, for several) in a browser."),
) -> None:
    """Write one self-contained HTML report per sweep (speedup, efficiency, greenup, timelines) and an index."""
    import webbrowser
    from pathlib import Path

    from greenkd.report import write_reports  # pandas and plotly load here only

    paths = write_reports(results, out)
    for path in paths:
        typer.echo(str(path))
    index = Path(out) / "index.html"
    if len(paths) > 1:
        typer.echo(f"index: {index}")
    if open_report:
        webbrowser.open((paths[0] if len(paths) == 1 else index).resolve().as_uri())


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
