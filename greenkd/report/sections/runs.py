"""Every run in the sweep, with why a run is left out of the figures and tables."""

from __future__ import annotations

from greenkd.report.page import data_table, fmt_f1, fmt_int, section
from greenkd.report.sections.context import Context


def render(ctx: Context) -> str:
    """The table of every run."""
    runs = ctx.runs
    intro = (
        "Every run in the sweep. Runs that are partial or failed are left out of every figure and table "
        "above, for the reason given."
    )
    df = runs.copy()
    df["why"] = [
        (r or "") + ("; " if r and n else "") + (n or "")
        for r, n in zip(df["reason"], df["notes"], strict=True)
    ]
    table = data_table(
        df,
        [
            ("run", "run", str),
            ("status", "status", str),
            ("label", "group", str),
            ("devices", "n", fmt_int),
            ("repeat", "repeat", fmt_int),
            ("backend", "backend", str),
            ("wall_s", "wall (s)", fmt_f1),
            ("energy_node_j", "energy (kJ)", lambda v: f"{v / 1e3:,.2f}"),
            ("avg_power_w", "power (W)", fmt_f1),
            ("why", "left out because / notes", str),
        ],
        row_class=lambda row: "" if row["usable"] else "skipped",
    )
    return section("runs", "Runs", intro, table)
