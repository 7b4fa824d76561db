"""A sweep's spec: the grid of runs an experiment TOML and the flags describe, and its default.

`SweepSpec` is built in one place (`SweepSpec.build`: a TOML, or the built-in default, then the
flags over it), expands into `SweepRun`s with stable names, and round-trips through sweep.json.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenkd.config import (
    BACKENDS,
    FRAMEWORKS,
    SCHEDULERS,
    DataThreads,
    RunConfig,
    parse_choice_list,
    parse_int_list,
)
from greenkd.errors import GreenkdError
from profilers.sensors.model import parse_power_model

# What `greenkd sweep` runs with no arguments; experiments/default.toml holds the same values
# (a test checks they agree) so the installed package works without the repository.
DEFAULT_SWEEP_RUN = RunConfig(
    model="vgg16",
    width=0.125,
    dataset="synthetic",
    n_train=2000,
    n_val=500,
    batch_size=64,
    teacher_epochs=12,
    epochs=2,
    eval_every=2,
    lr=0.03,
    finetune_epochs=3,
    finetune_layers="all",  # 3 epochs of every layer beat 3 of the blocks alone here (default.toml)
    acceptance="threshold",  # no serial selection fine-tunes in a scaling sweep (default.toml says why)
)
DEFAULT_SWEEP_DESCRIPTION = (
    "The small embedded sweep: VGG16 at width 1/8 on synthetic 32x32 shapes, "
    "1 and 2 devices, round robin and bin packing, tf.data autotune and 1 thread."
)
# Grid axes and sweep-level settings live in [sweep]; the RunConfig fields they set are not [run] keys.
_SWEEP_KEYS = (
    "gpus",
    "sched",
    "data_threads",
    "repeat",
    "backend",
    "idle_seconds",
    "hz",
    "power_model",
    "allow_oversubscribe",
    "framework",
)
_NOT_RUN_KEYS = (
    "gpus",
    "sched",
    "data_threads",
    "backend",
    "allow_oversubscribe",
    "out",
    "cores_per_device",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class SweepRun:
    """One planned run of a sweep: its stable name, its full RunConfig and where it sits in the grid."""

    name: str
    config: RunConfig
    devices: int
    sched: str  # the scheduler of the config; a shared 1-device run serves every scheduler
    threads: str  # the thread setting's label (DataThreads.label)
    repeat: int
    baseline_for: tuple[str, ...] = ()  # schedulers a shared 1-device run is the baseline of
    framework: str = "tensorflow"  # the config's framework (its own grid and 1-device baseline)

    def meta(self, sweep: str) -> dict[str, Any]:
        """What the sweep adds to the run's config.json `meta` (the analysis reads it)."""
        return {
            "sweep": sweep,
            "run": self.name,
            "repeat": self.repeat,
            "data_threads_label": self.threads,
            "baseline_for": list(self.baseline_for),
        }


@dataclass(frozen=True)
class SweepSpec:
    """A grid of distillation runs: frameworks x device counts x schedulers x data threads x repeats
    over one RunConfig."""

    name: str = "default"
    description: str = DEFAULT_SWEEP_DESCRIPTION
    devices: tuple[int, ...] = (1, 2)
    scheds: tuple[str, ...] = ("rr", "binpack")
    data_threads: tuple[DataThreads, ...] = (DataThreads(), DataThreads.parse(1))
    repeat: int = 1
    backend: str = "local"
    idle_seconds: float = 0.0  # profiler idle baseline before each run
    hz: float = 1.0
    # `--power-model cpu:IDLE_W:MAX_W`: each run's profile also estimates CPU package energy
    # (sensor=model, labelled an estimate in the report, never added to measured energy).
    power_model: str | None = None
    allow_oversubscribe: bool = False
    run: RunConfig = DEFAULT_SWEEP_RUN  # every other run setting
    # The frameworks under Keras, each a grid of its own; () = the run's framework alone. With one,
    # `run.framework` holds it (sweep.json as before); with more, `run.framework` is the first.
    frameworks: tuple[str, ...] = ()
    experiment: str | None = field(default=None, compare=False)  # the TOML it came from

    def __post_init__(self) -> None:
        checks = [
            (
                bool(_NAME.match(self.name)),
                f"sweep name {self.name!r} must be letters, digits, '.', '_' or '-' (a directory name)",
            ),
            (
                bool(self.devices) and min(self.devices) >= 1,
                f"device counts must be >= 1, got {self.devices}",
            ),
            (bool(self.scheds), "no scheduler given"),
            (bool(self.data_threads), "no data-threads setting given"),
            (self.repeat >= 1, f"--repeat must be >= 1, got {self.repeat}"),
            (
                self.backend in BACKENDS,
                f"unknown backend {self.backend!r}: use one of {', '.join(BACKENDS)}",
            ),
            (self.idle_seconds >= 0, f"--idle-seconds must be >= 0, got {self.idle_seconds}"),
            (self.hz > 0, f"--hz must be > 0, got {self.hz}"),
        ]
        for sched in self.scheds:
            checks.append(
                (
                    sched in SCHEDULERS,
                    f"unknown scheduler {sched!r}: use one of {', '.join(SCHEDULERS)}",
                )
            )
        for ok, message in checks:
            if not ok:
                raise GreenkdError(message)
        frameworks = tuple(
            parse_choice_list(
                self.frameworks or (self.run.framework,), FRAMEWORKS, what="framework"
            )
        )
        object.__setattr__(self, "frameworks", frameworks)
        if self.run.framework != frameworks[0]:
            object.__setattr__(self, "run", self.run.replace(framework=frameworks[0]))
        if self.power_model is not None:
            # Canonical text in sweep.json; a malformed model is a one-line error here.
            model = parse_power_model(self.power_model)
            object.__setattr__(self, "power_model", model.spec if model else None)

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        experiment: str | Path | None = None,
        *,
        gpus: str | None = None,
        sched: str | None = None,
        data_threads: str | None = None,
        backend: str | None = None,
        repeat: int | None = None,
        name: str | None = None,
        idle_seconds: float | None = None,
        allow_oversubscribe: bool | None = None,
        power_model: str | None = None,
        framework: str | None = None,
    ) -> SweepSpec:
        """The spec from an experiment TOML (or the built-in default), then every flag given over it."""
        spec = cls() if experiment is None else cls.from_toml(resolve_experiment(experiment))
        changes: dict[str, Any] = {}
        if gpus is not None:
            changes["devices"] = tuple(parse_int_list(gpus, what="--gpus"))
        if sched is not None:
            changes["scheds"] = tuple(parse_choice_list(sched, SCHEDULERS, what="scheduler"))
        if data_threads is not None:
            changes["data_threads"] = _parse_threads(data_threads)
        if framework is not None:
            changes["frameworks"] = tuple(
                parse_choice_list(framework, FRAMEWORKS, what="framework")
            )
        for key, value in (
            ("backend", backend),
            ("repeat", repeat),
            ("name", name),
            ("idle_seconds", idle_seconds),
            ("allow_oversubscribe", allow_oversubscribe),
            ("power_model", power_model),
        ):
            if value is not None:
                changes[key] = value
        return dataclasses.replace(spec, **changes) if changes else spec

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepSpec:
        """Read an experiment file: top-level name/description, a [sweep] grid and [run] settings."""
        import tomllib

        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise GreenkdError(f"no experiment file at {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise GreenkdError(f"{path} is not valid TOML: {exc}") from None
        try:
            return cls.from_mapping(data, default_name=path.stem, experiment=str(path))
        except GreenkdError as exc:
            raise GreenkdError(f"{path}: {exc}") from None

    @classmethod
    def from_mapping(
        cls, data: dict[str, Any], *, default_name: str = "sweep", experiment: str | None = None
    ) -> SweepSpec:
        """A spec from the TOML layout (also what `to_dict` writes)."""
        unknown = sorted(set(data) - {"name", "description", "sweep", "run"})
        if unknown:
            raise GreenkdError(
                f"unknown keys {', '.join(unknown)}: use name, description, [sweep] and [run]"
            )
        grid = dict(data.get("sweep") or {})
        run = dict(data.get("run") or {})
        bad = sorted(set(grid) - set(_SWEEP_KEYS))
        if bad:
            raise GreenkdError(
                f"unknown [sweep] keys {', '.join(bad)}: use {', '.join(_SWEEP_KEYS)}"
            )
        misplaced = sorted(set(run) & set(_NOT_RUN_KEYS))
        if misplaced:
            raise GreenkdError(
                f"set {', '.join(misplaced)} under [sweep], not [run] (the sweep sets them per run)"
            )
        values: dict[str, Any] = {
            "name": str(data.get("name") or default_name),
            "description": str(data.get("description") or ""),
            "run": RunConfig.from_dict(run),
            "experiment": experiment,
        }
        if "gpus" in grid:
            values["devices"] = tuple(parse_int_list(_as_text(grid["gpus"]), what="gpus"))
        if "sched" in grid:
            values["scheds"] = tuple(
                parse_choice_list(_as_text(grid["sched"]), SCHEDULERS, what="scheduler")
            )
        if "data_threads" in grid:
            values["data_threads"] = _parse_threads(grid["data_threads"])
        if "framework" in grid:
            if "framework" in run:
                raise GreenkdError(
                    "set framework under [sweep] (a list: one grid each) or [run], not both"
                )
            values["frameworks"] = tuple(
                parse_choice_list(_as_text(grid["framework"]), FRAMEWORKS, what="framework")
            )
        for key, kind in (
            ("repeat", int),
            ("backend", str),
            ("idle_seconds", float),
            ("hz", float),
            ("power_model", str),
            ("allow_oversubscribe", bool),
        ):
            if key in grid:
                value = grid[key]
                if kind is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                    raise GreenkdError(f"[sweep] {key} must be a {kind.__name__}, got {value!r}")
                values[key] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The TOML layout as a dict (sweep.json stores it; `from_mapping` reads it back)."""
        run = self.run.to_dict()
        for key in _NOT_RUN_KEYS:
            run.pop(key, None)
        several = len(self.frameworks) > 1
        if several:  # [sweep] framework holds them; one framework stays in [run] as before
            run.pop("framework", None)
        return {
            "name": self.name,
            "description": self.description,
            "sweep": {
                "gpus": list(self.devices),
                "sched": list(self.scheds),
                "data_threads": [_threads_text(t) for t in self.data_threads],
                "repeat": self.repeat,
                "backend": self.backend,
                "idle_seconds": self.idle_seconds,
                "hz": self.hz,
                **({"power_model": self.power_model} if self.power_model else {}),
                "allow_oversubscribe": self.allow_oversubscribe,
                **({"framework": list(self.frameworks)} if several else {}),
            },
            "run": run,
        }

    # ------------------------------------------------------------------ the grid

    def expand(
        self, sweep_dir: str | Path, *, cores_per_device: int | None = None
    ) -> list[SweepRun]:
        """Every run in order: repeat, framework, threads, device count, scheduler; names like
        `g2-binpack-t4-r0`, or `jax-g2-binpack-t4-r0` in a sweep of several frameworks (one
        framework keeps the names of sweeps from before frameworks were a dimension, so they resume).

        A 1-device run is the same whatever the scheduler, so it runs once per framework, thread
        setting and repeat (`g1-t4-r0`), configured with the first scheduler, and is every
        scheduler's baseline within its framework. `cores_per_device` makes a CPU device the same
        size at every device count.
        """
        sweep_dir = Path(sweep_dir)
        runs: list[SweepRun] = []
        grid = [
            (repeat, framework, threads)
            for repeat in range(self.repeat)
            for framework in self.frameworks
            for threads in self.data_threads
        ]
        for repeat, framework, threads in grid:
            prefix = f"{framework}-" if len(self.frameworks) > 1 else ""
            token = _threads_text(threads).replace("autotune", "auto")
            for n in sorted(self.devices):
                scheds = self.scheds[:1] if n == 1 else self.scheds
                for sched in scheds:
                    name = prefix + (
                        f"g1-t{token}-r{repeat}" if n == 1 else f"g{n}-{sched}-t{token}-r{repeat}"
                    )
                    config = self.run.replace(
                        framework=framework,
                        gpus=n,
                        sched=sched,
                        data_threads=threads,
                        backend=self.backend,
                        allow_oversubscribe=self.allow_oversubscribe,
                        cores_per_device=cores_per_device,
                        out=str(sweep_dir / name),
                    )
                    runs.append(
                        SweepRun(
                            name,
                            config,
                            n,
                            sched,
                            threads.label,
                            repeat,
                            baseline_for=self.scheds if n == 1 else (),
                            framework=framework,
                        )
                    )
        return runs


def resolve_experiment(experiment: str | Path) -> Path:
    """An experiment file: a path, or a preset name looked up in ./experiments and the source tree's."""
    path = Path(experiment)
    if path.suffix == ".toml" or path.is_file() or "/" in str(experiment):
        if not path.is_file():
            raise GreenkdError(f"no experiment file at {path}")
        return path
    # greenkd/sweep/spec.py -> the source tree's experiments/
    for folder in (Path("experiments"), Path(__file__).resolve().parents[2] / "experiments"):
        candidate = folder / f"{experiment}.toml"
        if candidate.is_file():
            return candidate
    raise GreenkdError(
        f"no experiment {experiment!r}: give a .toml path or a preset name from experiments/"
    )


def _as_text(value: Any) -> str:
    """A TOML value that may be a string, a number or a list, as the comma-separated text flags use."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _parse_threads(value: Any) -> tuple[DataThreads, ...]:
    parts = _as_text(value).split(",")
    out: list[DataThreads] = []
    for part in parts:
        if not part.strip():
            raise GreenkdError(f"empty entry in data-threads list {_as_text(value)!r}")
        threads = DataThreads.parse(part)
        if threads not in out:
            out.append(threads)
    return tuple(out)


def _threads_text(threads: DataThreads) -> str:
    """`autotune` or the number of parallel calls, as flags and TOML write it."""
    if threads == DataThreads():
        return "autotune"
    if (
        threads.max_intra_op_parallelism == 1
        and threads.private_threadpool_size is None
        and threads.parallel_calls
    ):
        return str(threads.parallel_calls)
    raise GreenkdError(f"a sweep takes data threads 'autotune' or N, not {threads.label!r}")
