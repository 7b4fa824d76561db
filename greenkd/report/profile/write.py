"""Writing profile pages: beside the profile (`greenkd profile --report`), or under the reports
directory with a card for the index (`greenkd report`), which also takes sweeps."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

from greenkd.analysis.profile import RUN_CONFIG_FILE, SUMMARY_FILE, find_profiles, load_profile
from greenkd.errors import GreenkdError
from greenkd.fileio import write_text_atomic
from greenkd.report.index import write_index
from greenkd.report.page import safe_name
from greenkd.report.profile.build import ProfilePage, build_profile_page
from greenkd.report.write import write_reports
from greenkd.rundir.read import find_sweeps, finite

PAGE_FILE = "report.html"


def write_profile_page(
    profile_dir: str | Path, path: str | Path | None = None, *, summary_name: str = SUMMARY_FILE
) -> Path:
    """Write one profile's page to `path` (default `<profile_dir>/report.html`) and return it."""
    profile = load_profile(profile_dir, summary_name)
    page = build_profile_page(profile)
    target = Path(path) if path is not None else Path(profile_dir) / PAGE_FILE
    write_text_atomic(target, page.html)
    return target


def write_profile_pages(profile_dirs: list[Path], out: str | Path = "reports") -> list[Path]:
    """`<out>/<profile>/report.html` and its card for each profile directory (no index)."""
    paths = []
    for profile_dir in profile_dirs:
        profile = load_profile(profile_dir)
        page = build_profile_page(profile)
        folder = Path(out) / safe_name(profile.name)
        write_text_atomic(folder / PAGE_FILE, page.html)
        card = profile_card(page)
        write_text_atomic(folder / "report.json", json.dumps(card, indent=2) + "\n")
        paths.append(folder / PAGE_FILE)
    return paths


def profile_card(page: ProfilePage) -> dict[str, Any]:
    """What the index shows of a profile page: when, how long, status, command, node energy."""
    s = page.profile.summary or {}
    command = s.get("command")
    idle = s.get("idle") or {}
    started = idle.get("start_ts") if finite(idle.get("start_ts")) else s.get("start_ts")
    return {
        "kind": "profile",
        "profile": page.profile.name,
        "source": str(page.profile.path.resolve()),
        "created_ts": started if finite(started) else page.profile.origin_ts,
        "generated_ts": time.time(),
        "status": page.profile.status,
        "duration_s": s.get("duration_s"),
        "energy_j": (s.get("total") or {}).get("energy_j"),
        "command": shlex.join(map(str, command)) if isinstance(command, list) else None,
        "exit_code": s.get("exit_code"),
        "figures": len(page.figures),
    }


def write_reports_and_pages(path: str | Path, out: str | Path = "reports") -> list[Path]:
    """Whatever `path` holds, reported under `out`: a page per profile directory, a report per sweep, the index.

    `path` may be a profile directory, a sweep directory, or a directory holding either kind.
    """
    root = Path(path)
    what = (
        "give a profile directory (samples.csv and summary.json, from `greenkd profile`), a sweep "
        "directory (sweep.json, from `greenkd sweep`) or a directory holding them"
    )
    if not root.exists():
        raise GreenkdError(f"nothing at {root}: {what}")
    if not root.is_dir():
        raise GreenkdError(f"{root} is a file; {what}")
    profiles = find_profiles(root)
    sweeps: list[Path] = []
    if profiles != [root]:
        try:
            sweeps = find_sweeps(root)
        except GreenkdError:
            if not profiles and (root / RUN_CONFIG_FILE).is_file():
                raise  # one run of a sweep: find_sweeps says which directory to give
            if not profiles:
                raise GreenkdError(f"{root} holds no profile or sweep: {what}") from None
    paths = write_profile_pages(profiles, out)
    problems: list[str] = []
    if sweeps:
        try:
            return paths + write_reports(root, out)  # the index, profiles' cards included
        except GreenkdError as exc:  # no usable sweep beside the profiles: list it, keep them
            if not profiles:
                raise
            problems.append(str(exc))
    write_index(out, problems)
    return paths
