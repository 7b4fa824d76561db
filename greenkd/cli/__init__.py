"""The `greenkd` command line: parses flags, calls the library, prints; one module per command group.

Heavy libraries (TensorFlow, pandas, plotly) are imported inside the commands
that need them. `greenkd profile` and `greenkd sensors` go further: a plain
invocation of either never imports typer, nor the other command groups
(`profilers.cli.run_fast`), since a profiler's start-up is added to every
command it wraps. Everything else, help and usage errors included, goes
through the typer app, built on first use (`app`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from greenkd.errors import GreenkdError

_FAST_COMMANDS = ("profile", "sensors")
_app: Any = None


def build_app() -> Any:
    """The typer app with every command group registered."""
    import typer

    from greenkd.cli import distill, plan, report, sweep
    from profilers import cli as profilers_cli

    app = typer.Typer(
        name="greenkd",
        help="Energy-aware parallel blockwise knowledge distillation: distill, profile, sweep, report.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    # `greenkd profile -- CMD` and `greenkd sensors` (profilers/cli.py; no TensorFlow on this path).
    profilers_cli.register(app, write_page=write_profile_page)
    # `greenkd distill`, `greenkd targets`, `greenkd teacher train` (distill.py), `greenkd sweep`
    # (sweep.py), `greenkd report` (report.py), `greenkd plan` (plan.py).
    for commands in (distill, sweep, report, plan):
        commands.register(app)
    return app


def write_profile_page(out: Path, summary_name: str) -> Path:
    """`greenkd profile --report`'s page, `<out>/report.html`: the profiler's layer sits below the
    report's, so the command passes this in; pandas and plotly load here, after the command ended."""
    from greenkd.report.profile import write_profile_page as write_page

    return write_page(out, summary_name=summary_name)


def __getattr__(name: str) -> Any:
    # `from greenkd.cli import app` builds the app then, not at import (PEP 562).
    global _app
    if name == "app":
        if _app is None:
            _app = build_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _run(argv: list[str]) -> None:
    if argv[:1] and argv[0] in _FAST_COMMANDS:
        from profilers.cli import run_fast

        code = run_fast(argv, write_page=write_profile_page)
        if code is not None:
            sys.exit(code)
    __getattr__("app")()


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        _run(sys.argv[1:])
    except GreenkdError as exc:
        print(f"greenkd: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("greenkd: interrupted; results written so far are kept on disk", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # As typer does for its commands: a reader that went away (`greenkd sensors | head -1`)
        # is exit code 1, without a traceback or a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
