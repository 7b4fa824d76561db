"""Progress bars and tables for the terminal (rich); the library reports, this draws."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class RichReporter:
    """Draws a run: a bar over tasks and one over epochs, and one line per finished task."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.tasks_bar = self.epochs_bar = None

    def phase(self, name: str, detail: str = "") -> None:
        if name != "tasks":
            self.close()
        self.console.print(f"[bold cyan]{name}[/] {detail}")

    def tasks_started(self, total: int, epochs: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.tasks_bar = self.progress.add_task("layer tasks", total=total)
        self.epochs_bar = self.progress.add_task("epochs", total=total * epochs)
        self.progress.start()

    def epoch(self, task: str, epoch: int, mse: float) -> None:
        if self.progress is not None:
            self.progress.update(
                self.epochs_bar, advance=1, description=f"epochs ({task} {epoch}: mse {mse:.3g})"
            )

    def task_done(self, result, target, accepted: bool) -> None:
        verdict = "[green]accepted[/]" if accepted else "[yellow]rejected[/]"
        self.console.print(
            f"  {result.name:<24} top-1 {result.accuracy:.3f}  mse {result.mse_start:.3g} -> "
            f"{result.mse_best:.3g}  {result.end - result.start:6.1f} s  {result.device}  {verdict}"
            + (
                f"  (fused pass, {result.fused_group.count(',') + 1} tasks)"
                if result.fused_group
                else ""
            )
        )
        if self.progress is not None:
            self.progress.update(self.tasks_bar, advance=1)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def summary_table(summary: dict[str, Any]) -> Table:
    """Teacher vs student: params, FLOPs and top-1."""
    table = Table(title="teacher vs student")
    for col in ("", "teacher", "student", "change"):
        table.add_column(col, justify="right" if col else "left")
    t_p, s_p = summary["teacher_params"], summary["student_params"]
    t_f, s_f = summary["teacher_flops"], summary["student_flops"]
    t_a, s_a = summary["teacher_accuracy"], summary["student_accuracy"]
    table.add_row("params", _si(t_p), _si(s_p), f"{t_p / s_p:.2f}x smaller")
    table.add_row("FLOPs / image", _si(t_f), _si(s_f), f"{t_f / s_f:.2f}x fewer")
    table.add_row("top-1", f"{t_a:.2%}", f"{s_a:.2%}", f"{(s_a - t_a) * 100:+.2f} points")
    table.add_row(
        "blocks accepted", "", f"{len(summary['accepted'])} of {summary['n_targets']}", ""
    )
    skipped = summary.get("skipped_targets") or []
    if skipped:  # no task: their block would be larger than the conv (--replace-growing)
        table.add_row(
            "layers skipped", "", ", ".join(s["name"] for s in skipped), "block larger than conv"
        )
    selection = summary.get("selection") or {}
    if selection.get("mode") == "target":
        table.add_row("target", _target_text(selection, t_a), _verdict(selection, s_a, t_a), "")
    secs = summary["seconds"]
    table.caption = "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items())
    return table


def _target_text(selection: dict[str, Any], teacher_accuracy: float) -> str:
    goal = selection.get("goal") or {}
    if goal.get("target_params") is not None:
        return f">= {goal['target_params']:g}x smaller"
    return f"top-1 >= {goal.get('needed_accuracy', teacher_accuracy):.2%}"


def _verdict(selection: dict[str, Any], student_accuracy: float, teacher_accuracy: float) -> str:
    """Met or missed, with the sets tried and the brief fine-tunes it took to choose."""
    goal = selection.get("goal") or {}
    met = selection.get("met")
    if goal.get("target_params") is None and goal.get("needed_accuracy") is not None:
        met = student_accuracy >= goal["needed_accuracy"] - 1e-9  # the final student decides
    n_sets, n_ft = len(selection.get("sets") or []), selection.get("finetunes", 0)
    return f"{'met' if met else 'missed'} ({n_sets} sets, {n_ft} brief fine-tunes)"


def diagnosis_lines(summary: dict[str, Any]) -> list[str]:
    """What the run says about a small student: the likely causes and the changes to try."""
    causes = summary.get("diagnosis") or []
    return ["[yellow]diagnosis:[/]", *(f"  - {escape(c)}" for c in causes)] if causes else []


def targets_table(targets, total: dict[str, Any], skipped: dict[str, str] | None = None) -> Table:
    """Every compressible layer with its cost before and after; `skipped` maps a layer left as it
    is to why (its block would be larger)."""
    skipped = skipped or {}
    n_all, n_in = total["n_targets"], total.get("n_replaced", total["n_targets"])
    count = f"{n_in} of {n_all}" if skipped else f"{n_all}"
    table = Table(
        title=f"{total['model']}: {count} layers to replace "
        f"({_si(total['params'])} params, {_si(total['flops'])}FLOPs per image)"
    )
    for col in ("layer", "k / s", "input -> output", "params", "FLOPs"):
        table.add_column(col, justify="left" if col in ("layer", "input -> output") else "right")
    for t in targets:
        table.add_row(
            f"{t.name}\n{_skip_cell(t)}" if t.name in skipped else t.name,
            f"{'x'.join(map(str, t.kernel))} / {t.strides[0]}",
            f"{'x'.join(map(str, t.input_shape))} -> {'x'.join(map(str, t.output_shape))}",
            f"{_si(t.params_before)} -> {_si(t.params_after)}",
            f"{_si(t.flops_before)} -> {_si(t.flops_after)}",
            style="dim" if t.name in skipped else None,
        )
    saved = f"-{_si(total['params_saved'])} params, -{_si(total['flops_saved'])}FLOPs per image"
    if not skipped:
        table.caption = f"replacing all: {saved}"
        return table
    rule = (
        "skipped: its block has more params or FLOPs than the conv, so the student would grow; "
        "--replace-growing replaces it anyway (the paper's)"
    )
    if n_in:
        table.caption = f"replacing {n_in}: {saved}\n{rule}"
    else:
        table.caption = f"nothing to replace, so `greenkd distill` stops\n{rule}"
    return table


def _skip_cell(target) -> str:
    """'skipped: more params', '... FLOPs' or '... params and FLOPs' than the conv."""
    larger = [
        what
        for what, grew in (
            ("params", target.params_after > target.params_before),
            ("FLOPs", target.flops_after > target.flops_before),
        )
        if grew
    ]
    return f"skipped: more {' and '.join(larger)}"
