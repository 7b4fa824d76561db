"""What every section is given: the sweep, its tables, the figure sink and the group styles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from greenkd.analysis import SweepData
from greenkd.report.figures import Figures


@dataclass
class Context:
    """The analysed sweep as the sections draw it."""

    sweep: SweepData
    runs: pd.DataFrame  # run_table, with display labels
    scaling: pd.DataFrame  # scaling_table
    figures: Figures  # every section draws into this one, so the page numbers its figures in order
    style: dict[str, dict[str, Any]]  # per usable group: colour, dash, symbol, label
    unit: str  # "GPUs", "CPU workers" or "devices"
    label_of: dict[str, str]  # group key -> display label
