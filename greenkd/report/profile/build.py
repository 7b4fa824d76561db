"""Lay out one profile's page: header, figures over time, then the tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go

from greenkd.analysis.profile import ProfileData, mark_spans
from greenkd.report.figures import Figures
from greenkd.report.page import page_html
from greenkd.report.profile import header, timeline
from greenkd.report.profile.tables import (
    attribution_section,
    energy_section,
    machine_section,
    marks_section,
    sensors_section,
    warnings_section,
)

NAV = [
    ("time", "Over time"),
    ("energy", "Energy"),
    ("marks", "Marks"),
    ("attribution", "Attribution"),
    ("warnings", "Warnings"),
    ("sensors", "Sensors"),
    ("machine", "Machine &amp; sampling"),
]


@dataclass
class ProfilePage:
    """A built profile page: the HTML and the figures drawn in it, in page order."""

    profile: ProfileData
    html: str
    figures: list[go.Figure] = field(default_factory=list)
    spans: pd.DataFrame = field(default_factory=pd.DataFrame)


def build_profile_page(profile: ProfileData) -> ProfilePage:
    """Every section of the page; figures are collected in drawing order."""
    figures = Figures()
    spans = mark_spans(profile.marks)
    sections = [
        header.render(profile),
        timeline.render(profile, spans, figures),
        energy_section(profile),
        marks_section(profile, spans),
        attribution_section(profile),
        warnings_section(profile),
        sensors_section(profile),
        machine_section(profile),
    ]
    shown = [(sid, title) for sid, title in NAV if any(f"id='{sid}'" in s for s in sections)]
    nav = "".join(f"<a href='#{sid}'>{title}</a>" for sid, title in shown)
    page = page_html(f"greenkd profile · {profile.name}", f"<nav>{nav}</nav>" + "".join(sections))
    return ProfilePage(profile=profile, html=page, figures=figures.figures, spans=spans)
