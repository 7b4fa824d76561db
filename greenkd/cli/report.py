"""`greenkd report`: HTML reports of sweeps and pages of profiles (pandas and plotly load inside the command)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)


def report_command(
    results: str = typer.Argument(
        ...,
        help="A sweep directory (results/<sweep>), a profile directory (`greenkd profile`'s --out), "
        "or a directory holding sweeps or profiles.",
    ),
    out: str = typer.Option(
        "reports", "--out", help="Where to write <sweep or profile>/report.html and index.html."
    ),
    open_report: bool = typer.Option(
        False, "--open", help="Open the report (or the index, for several) in a browser."
    ),
) -> None:
    """Write one self-contained HTML report per sweep (speedup, efficiency, greenup, timelines) or page per profile (power, utilisation, energy over time), and an index."""
    import webbrowser
    from pathlib import Path

    from greenkd.report.profile import write_reports_and_pages  # pandas and plotly load here only

    paths = write_reports_and_pages(results, out)
    for path in paths:
        typer.echo(str(path))
    index = Path(out) / "index.html"
    if len(paths) > 1:
        typer.echo(f"index: {index}")
    if open_report:
        webbrowser.open((paths[0] if len(paths) == 1 else index).resolve().as_uri())
