"""The report's sections in page order, one module each; every module has `render(ctx) -> str`.

Adding a section is adding a module here and a line to SECTIONS (and to NAV if it has a link).
"""

from __future__ import annotations

from greenkd.report.sections import (
    accuracy,
    allocation,
    energy,
    frameworks,
    header,
    hosts,
    layers,
    machine,
    phases,
    prediction,
    runs,
    scaling,
    selection,
    timeline,
)
from greenkd.report.sections.context import Context

# Page order; figures are numbered in this order too.
SECTIONS = (
    header,
    scaling,
    energy,
    frameworks,
    phases,
    layers,
    allocation,
    prediction,
    timeline,
    hosts,
    accuracy,
    selection,
    machine,
    runs,
)
NAV = [
    ("scaling", "Scaling"),
    ("energy", "Energy"),
    ("frameworks", "Frameworks"),  # sweeps of several frameworks only
    ("phases", "Phases"),
    ("layers", "Layers"),
    ("allocation", "Allocation"),
    ("prediction", "Predicted vs measured"),
    ("timeline", "Power &amp; utilisation"),
    ("hosts", "Hosts"),  # runs across hosts only: the link is left out where the section is
    ("accuracy", "Accuracy"),
    ("selection", "Block selection"),
    ("machine", "Machine &amp; sensors"),
    ("runs", "Runs"),
]


def render_all(ctx: Context) -> list[str]:
    """Every section's HTML, in page order."""
    return [s.render(ctx) for s in SECTIONS]


__all__ = ["NAV", "SECTIONS", "Context", "render_all"]
