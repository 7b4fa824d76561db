"""The page header: the sweep's name, host and model, and the headline numbers as cards."""

from __future__ import annotations

import html

from greenkd.analysis import best_row, median_accuracy
from greenkd.report.page import card, first_text, when
from greenkd.report.sections.context import Context


def render(ctx: Context) -> str:
    """The header with the best speedup, the best greenup (or why energy is missing), accuracy, runs."""
    sweep, runs, scaling, unit = ctx.sweep, ctx.runs, ctx.scaling, ctx.unit
    usable = runs[runs["usable"]]
    counts = runs["status"].value_counts()
    status = ", ".join(f"{counts[s]} {s}" for s in ("complete", "partial", "failed") if s in counts)
    hosts = sorted({str(r.meta.get("host")) for r in sweep.runs if r.meta.get("host")})
    models = sorted({str(m) for m in usable["model"] if m})
    cards = []
    b = best_row(scaling, "speedup")
    if b is not None:
        cards.append(
            card(
                "best speedup",
                f"{b['speedup']:.2f}×",
                f"{b['label']}, {int(b['devices'])} {unit}, efficiency {b['efficiency']:.2f}",
            )
        )
    g = best_row(scaling, "greenup")
    if g is not None:
        saving = 1 - 1 / g["greenup"]
        cards.append(
            card(
                "best greenup",
                f"{g['greenup']:.2f}×",
                f"{g['label']}, {int(g['devices'])} {unit}: {saving:.0%} less energy",
            )
        )
    elif not usable.empty:
        cards.append(
            card("energy", "not measured", first_text(usable["energy_note"]) or "no energy samples")
        )
        e = best_row(scaling, "greenup_estimate") if "greenup_estimate" in scaling else None
        if e is not None:
            cards.append(
                card(
                    "greenup (estimate)",
                    f"{e['greenup_estimate']:.2f}× estimate",
                    f"{e['label']}, {int(e['devices'])} {unit}: from the power model "
                    f"{e['estimate_model']}, not measured",
                )
            )
    acc = median_accuracy(runs)
    if acc is not None:
        cards.append(
            card(
                "top-1 accuracy",
                f"{acc['student']:.2%}",
                f"student (median); teacher {acc['teacher']:.2%}, {acc['change_points']:+.2f} points",
            )
        )
    cards.append(card("runs", f"{len(usable)} / {len(runs)}", f"usable / total ({status})"))
    sub = " · ".join(
        x
        for x in (
            f"started {when(sweep.created_ts)}" if sweep.created_ts else "",
            f"host {', '.join(hosts)}" if hosts else "",
            f"model {', '.join(models)}" if models else "",
            f"devices: {unit}",
        )
        if x
    )
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in sweep.notes)
    return (
        f"<header><h1>Sweep <code>{html.escape(sweep.name)}</code></h1><p class='sub'>{html.escape(sub)}</p>"
        f"<div class='cards'>{''.join(cards)}</div>{notes}</header>"
    )
