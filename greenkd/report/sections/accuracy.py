"""Top-1 accuracy of teacher and student, parameters and FLOPs (paper Table 7)."""

from __future__ import annotations

from greenkd.analysis import accuracy_table
from greenkd.report.page import data_table, fmt_int, notice, section
from greenkd.report.sections.context import Context


def render(ctx: Context) -> str:
    """The accuracy table, per group and device count."""
    runs = ctx.runs
    intro = (
        "Top-1 accuracy of the teacher and of the assembled student, before and after fine-tuning "
        "(paper Table 7); parameters and FLOPs of both."
    )
    df = accuracy_table(runs)
    if df.empty:
        return section("accuracy", "Accuracy", intro, notice("No usable run reports accuracy."))
    pct = lambda v: f"{v:.2%}"  # noqa: E731
    table = data_table(
        df,
        [
            ("label", "group", str),
            ("devices", "n", fmt_int),
            ("repeats", "runs", fmt_int),
            ("teacher_accuracy", "teacher top-1", pct),
            ("before", "student before fine-tune", pct),
            ("student_accuracy", "student top-1", pct),
            ("change", "change (points)", lambda v: f"{v:+.2f}"),
            ("teacher_params", "teacher params", fmt_int),
            ("student_params", "student params", fmt_int),
            ("params_ratio", "params ×", lambda v: f"{v:.1f}×"),
            ("flops_ratio", "FLOPs ×", lambda v: f"{v:.1f}×"),
        ],
    )
    return section("accuracy", "Accuracy", intro, table)
