"""A self-contained page per profile (`greenkd profile`'s output), like the sweep report's.

Power, utilisation and cumulative energy over time per domain, GPU clocks and temperature, the
idle baseline and the marks drawn on every figure; energy per domain with its source and which
domains make the node total; the marks' intervals with their energy; attribution where the
summary has it; warnings; sensors missing with the fix; the machine and the sampler's lateness.
The page reuses the sweep report's shell, style and figures (plotly.js inlined once: it opens
offline and loads nothing).

Modules: `header` (command, status, headline cards), `timeline` (the figures over time), `tables`
(the sections below them), `build` (the page), `write` (the files, and `greenkd report`'s choice
between profiles and sweeps). The numbers come from `greenkd.analysis.profile`.
"""

from __future__ import annotations

from greenkd.report.profile.build import ProfilePage, build_profile_page
from greenkd.report.profile.write import (
    PAGE_FILE,
    profile_card,
    write_profile_page,
    write_profile_pages,
    write_reports_and_pages,
)

__all__ = [
    "PAGE_FILE",
    "ProfilePage",
    "build_profile_page",
    "profile_card",
    "write_profile_page",
    "write_profile_pages",
    "write_reports_and_pages",
]
