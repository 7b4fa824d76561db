"""Run configuration: one frozen dataclass per run, range/list parsing, JSON round trip.

A `RunConfig` is built in one place (the CLI or a sweep), written to
`config.json` in every run directory, and read back by workers, analysis and
reports. No dicts of options are threaded through the library.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenkd.errors import GreenkdError
from greenkd.fileio import write_json_atomic

MODEL_ZOO = ("vgg16", "resnet50")  # teachers greenkd builds itself; anything else is a .keras file
DATASETS = ("synthetic", "digits", "cifar10", "cifar100")  # plus tfds:NAME and image folders
SCHEDULERS = ("rr", "binpack", "ws", "opt")
BACKENDS = ("local", "mpi", "dask")
BLOCKS = ("a", "b", "c", "d")
ACCEPTANCE = ("target", "threshold")
FINETUNE_LAYERS = ("blocks", "all")
FINETUNE_BATCH_NORM = ("batch", "frozen")
JIT = ("off", "on", "auto")
# Keras 3 backends greenkd runs on (greenkd.framework); TensorFlow is the default, and its input
# path is tf.data; the others read through Keras PyDatasets (greenkd.batches)
FRAMEWORKS = ("tensorflow", "jax")
# --jit as Keras's compile() takes it
JIT_COMPILE: dict[str, bool | str] = {"off": False, "on": True, "auto": "auto"}
_BUDGET = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|)$")


@dataclass(frozen=True)
class DataThreads:
    """tf.data thread settings (paper §4.3).

    `parallel_calls=None` means AUTOTUNE; the paper's fix for contention is a
    fixed number of parallel calls with `max_intra_op_parallelism=1`.
    """

    parallel_calls: int | None = None
    max_intra_op_parallelism: int | None = None
    private_threadpool_size: int | None = None

    @property
    def label(self) -> str:
        if self.parallel_calls is None and self.max_intra_op_parallelism is None:
            return (
                "autotune"
                if self.private_threadpool_size is None
                else (f"autotune-pool{self.private_threadpool_size}")
            )
        parts = [str(self.parallel_calls) if self.parallel_calls else "autotune"]
        if self.max_intra_op_parallelism is not None:
            parts.append(f"intra{self.max_intra_op_parallelism}")
        if self.private_threadpool_size is not None:
            parts.append(f"pool{self.private_threadpool_size}")
        return "-".join(parts)

    @classmethod
    def parse(cls, text: str | int) -> DataThreads:
        """`autotune` (TensorFlow's default) or `N`: N parallel calls, intra-op 1 (the paper's fix)."""
        value = str(text).strip().lower()
        if value in ("autotune", "auto"):
            return cls()
        if value.isdigit() and int(value) > 0:
            return cls(parallel_calls=int(value), max_intra_op_parallelism=1)
        raise GreenkdError(
            f"data threads {text!r} is not 'autotune' or a positive number of parallel calls"
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one distillation run."""

    # teacher and data
    model: str = "vgg16"  # zoo name (vgg16, resnet50) or a path to a .keras file
    width: float = 0.125  # vgg16 channel multiplier; 1.0 is the paper's model
    dataset: str = "synthetic"
    data_dir: str | None = None
    n_train: int | None = None  # synthetic/digits: images generated or kept; None = dataset default
    n_val: int | None = None
    image_size: int = 32
    preprocess: str | None = None  # None = the model's own preprocessing
    augment: bool = True
    batch_size: int = 64
    teacher_epochs: int = 40  # the cap: a teacher stops earlier once its val top-1 stops improving
    teacher_patience: int = 6  # epochs without a val top-1 gain before the teacher stops
    # layer tasks (paper §3.1, §4.1.6)
    block: str = "a"
    # A target whose block has more params or more FLOPs than its conv is skipped (no task), so a
    # student never grows; True replaces every target, as the paper does (its presets set it)
    replace_growing: bool = False
    epochs: int = 6  # the cap per task: a good-enough block stops earlier (`patience`)
    eval_every: int = 2
    # evaluations without a spliced top-1 or MSE gain before a block that meets the acceptance
    # threshold stops training; 0 trains every task for all its epochs (the paper's fixed count)
    patience: int = 1
    budget: str | None = (
        None  # the whole task phase: "N" epochs (all tasks) or "Ns" / "Nm" wall time
    )
    lr: float = 1e-2  # RMSprop, decayed exponentially to lr * lr_end_factor over the epochs
    lr_end_factor: float = 0.03
    accept_max_drop: float | None = 0.02  # accept a block if spliced top-1 >= teacher - this
    accept_min_accuracy: float | None = None  # or an absolute top-1 floor
    # Which blocks make the student: "target" chooses the set that best meets target_accuracy
    # (or target_params) after fine-tuning; "threshold" keeps every block that passes the
    # per-block rule above on its own (the paper's Algorithm 1; the paper presets use it).
    acceptance: str = "target"
    target_accuracy: float = 0.01  # target mode: student top-1 at most this below the teacher's
    target_params: float | None = None  # target mode: teacher/student params >= this instead
    # assembly and fine-tuning
    # 10 epochs of the blocks alone: on digits the 12-block student (3.2x fewer params, 57.9%
    # spliced; teacher 98.3%) reached 92.8% after 2 epochs, 96.9-97.5% after 6 (three data
    # orders) and 98.3-98.9% after 10, while fine-tuning every layer for 6 epochs gave 97.8%
    finetune_epochs: int = 10
    finetune_lr: float = 0.003
    # "blocks": fine-tuning trains the spliced blocks, the teacher's own layers stay as trained;
    # "all": every layer trains (the paper's end-to-end fine-tuning; freeze_1x1 then applies)
    finetune_layers: str = "blocks"
    # "batch": batch norms that fine-tune train (statistics of the batch, moving statistics
    # updated); "frozen": every batch norm in inference mode, so a data-parallel fine-tune equals
    # the serial one up to float noise. Frozen statistics from block training do not fit once many
    # blocks are spliced: the default run's 12-block student collapsed to 7-10% (docs/parallel.md)
    finetune_batch_norm: str = "batch"
    freeze_1x1: bool = False
    # parallelism
    gpus: int = 1  # devices: GPUs where there are GPUs, else CPU core sets
    sched: str = "rr"
    backend: str = "local"
    fuse: bool = True  # one teacher pass per batch for all of a worker's tasks; False = the paper's
    # after each fused pass, time each block's own step and the shared trunk's on a few batches
    # (tasks.csv block_step_s ...; greenkd/distill/blockcost.py): on by default, docs/distillation.md
    block_costs: bool = True
    # XLA: "off" and "on" mean the same on every device; "auto" is Keras's choice (XLA on GPUs,
    # not on CPUs with TensorFlow). Off by default: the same graph on CPU and GPU, and no
    # compilation in the task times.
    jit: str = "off"
    # the framework under Keras, set as KERAS_BACKEND in every process of the run before Keras
    # loads (`--backend` is the executor)
    framework: str = "tensorflow"
    data_threads: DataThreads = field(default_factory=DataThreads)
    timings: str | None = None
    allow_oversubscribe: bool = False
    cores_per_device: int | None = None  # CPU devices: cores each; None = the machine split n ways
    calibrate: bool = False  # time a few steps of each task when no measured times exist
    scheduler_address: str | None = None  # dask: an existing scheduler; None = a local cluster
    # mpi across hosts (checked in executors.mpi): "h1,h2" (mpiexec -hosts) or an mpich hostfile
    hosts: str | None = None
    hostfile: str | None = None
    seed: int = 0
    out: str = "runs/latest"

    def __post_init__(self) -> None:
        if isinstance(self.data_threads, dict):
            object.__setattr__(self, "data_threads", DataThreads(**self.data_threads))
        self.validate()

    def validate(self) -> None:
        """Raise GreenkdError, naming the flag, for any value out of range."""
        checks = [
            (self.width > 0, f"--width must be > 0, got {self.width}"),
            (self.image_size >= 32, f"--image-size must be >= 32, got {self.image_size}"),
            (self.batch_size > 0, f"--batch-size must be > 0, got {self.batch_size}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.eval_every >= 1, f"--eval-every must be >= 1, got {self.eval_every}"),
            (self.teacher_epochs >= 1, f"--teacher-epochs must be >= 1, got {self.teacher_epochs}"),
            (
                self.finetune_epochs >= 0,
                f"--finetune-epochs must be >= 0, got {self.finetune_epochs}",
            ),
            (self.gpus >= 1, f"--gpus must be >= 1, got {self.gpus}"),
            (
                self.cores_per_device is None or self.cores_per_device >= 1,
                f"--cores-per-device must be >= 1, got {self.cores_per_device}",
            ),
            (self.lr > 0 and self.finetune_lr > 0, "learning rates must be > 0"),
            (
                0 < self.lr_end_factor <= 1,
                f"--lr-end-factor must be in (0, 1], got {self.lr_end_factor}",
            ),
            (
                self.block in BLOCKS,
                f"--block must be one of {', '.join(BLOCKS)}, got {self.block!r}",
            ),
            (
                self.sched in SCHEDULERS,
                f"unknown scheduler {self.sched!r}: use one of {', '.join(SCHEDULERS)}",
            ),
            (
                self.backend in BACKENDS,
                f"unknown backend {self.backend!r}: use one of {', '.join(BACKENDS)}",
            ),
        ]
        if self.accept_max_drop is not None:
            checks.append(
                (
                    0 <= self.accept_max_drop <= 1,
                    f"--max-drop must be between 0 and 1 (a fraction of top-1), got {self.accept_max_drop}",
                )
            )
        if self.accept_min_accuracy is not None:
            checks.append(
                (
                    0 <= self.accept_min_accuracy <= 1,
                    f"--min-accuracy must be between 0 and 1, got {self.accept_min_accuracy}",
                )
            )
        checks += [
            (
                self.teacher_patience >= 1,
                f"--teacher-patience must be >= 1, got {self.teacher_patience}",
            ),
            (self.patience >= 0, f"--patience must be >= 0, got {self.patience}"),
            (
                isinstance(self.replace_growing, bool),
                f"replace_growing must be true or false, got {self.replace_growing!r}",
            ),
            (self.jit in JIT, f"--jit must be one of {', '.join(JIT)}, got {self.jit!r}"),
            (
                self.framework in FRAMEWORKS,
                f"--framework must be one of {', '.join(FRAMEWORKS)}, got {self.framework!r}",
            ),
            (
                self.finetune_layers in FINETUNE_LAYERS,
                f"--finetune-layers must be one of {', '.join(FINETUNE_LAYERS)}, "
                f"got {self.finetune_layers!r}",
            ),
            (
                self.finetune_batch_norm in FINETUNE_BATCH_NORM,
                f"--finetune-batch-norm must be one of {', '.join(FINETUNE_BATCH_NORM)}, "
                f"got {self.finetune_batch_norm!r}",
            ),
            (
                self.acceptance in ACCEPTANCE,
                f"--acceptance must be one of {', '.join(ACCEPTANCE)}, got {self.acceptance!r}",
            ),
            (
                0 <= self.target_accuracy <= 1,
                f"--target-accuracy must be between 0 and 1 (a drop in top-1), got {self.target_accuracy}",
            ),
            (
                self.target_params is None or self.target_params >= 1,
                f"--target-params must be >= 1 (teacher / student params), got {self.target_params}",
            ),
        ]
        if self.budget is not None:
            self.budget_limits()  # raises on a budget it cannot read
        for n, name in ((self.n_train, "--n-train"), (self.n_val, "--n-val")):
            if n is not None:
                checks.append((n > 0, f"{name} must be > 0, got {n}"))
        for ok, message in checks:
            if not ok:
                raise GreenkdError(message)

    def budget_limits(self) -> tuple[int | None, float | None]:
        """The task phase's budget as (epochs, seconds): "40" is 40 epochs summed over the
        tasks, "300s" or "5m" is wall time; (None, None) without a budget."""
        if self.budget is None:
            return None, None
        text = str(self.budget).strip().lower()
        match = _BUDGET.match(text)
        if not match:
            raise GreenkdError(
                f"--budget {self.budget!r} is not N (epochs, all tasks together), Ns or Nm"
            )
        value, unit = float(match.group(1)), match.group(2)
        if value <= 0:
            raise GreenkdError(f"--budget must be > 0, got {self.budget!r}")
        if unit == "":
            if not value.is_integer():
                raise GreenkdError(
                    f"--budget in epochs must be a whole number, got {self.budget!r}"
                )
            return int(value), None
        return None, value * (60.0 if unit == "m" else 1.0)

    def keras_jit(self) -> bool | str:
        """`--jit` as Keras's compile() takes it. Decision: on JAX every step is compiled with
        XLA whatever --jit says: JAX has no graph runtime besides XLA, and Keras's
        jit_compile=False there runs each op eagerly, one dispatch at a time (a run many times
        slower that compares nothing anyone runs)."""
        return True if self.framework == "jax" else JIT_COMPILE[self.jit]

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GreenkdError(f"unknown run settings: {', '.join(unknown)}")
        return cls(**data)

    def write(self, path: str | Path, **extra: Any) -> None:
        """Write config.json: the settings plus `extra` (version, host) under `meta`."""
        payload = {"config": self.to_dict(), "meta": extra}
        write_json_atomic(path, payload)

    @classmethod
    def read(cls, path: str | Path) -> RunConfig:
        try:
            payload = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise GreenkdError(f"no run configuration at {path}") from None
        except json.JSONDecodeError as exc:
            raise GreenkdError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(payload.get("config", payload))


def is_model_file(name: str) -> bool:
    """True for anything that looks like a path rather than a zoo name."""
    return name not in MODEL_ZOO and ("/" in name or Path(name).suffix != "")


def unknown_model(name: str) -> GreenkdError:
    return GreenkdError(
        f"unknown model {name!r}: use {', '.join(MODEL_ZOO)} or a path to a .keras file"
    )


def unknown_dataset(name: str) -> GreenkdError:
    return GreenkdError(
        f"unknown dataset {name!r}: use {', '.join(DATASETS)}, tfds:NAME, "
        "or a directory with one sub-folder of images per class"
    )


def check_model_and_dataset(cfg: RunConfig) -> None:
    """Unknown model or dataset names and missing model files, said before any framework loads."""
    if cfg.model not in MODEL_ZOO:
        if not is_model_file(cfg.model):
            raise unknown_model(cfg.model)
        if not Path(cfg.model).expanduser().is_file():
            raise GreenkdError(f"model file {Path(cfg.model).expanduser()} does not exist")
    name = cfg.dataset
    folder = Path(name).expanduser().is_dir()
    if name not in DATASETS and not name.startswith("tfds:") and not folder:
        raise unknown_dataset(name)


_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_int_list(text: str | int | Iterable[int], *, what: str = "devices") -> list[int]:
    """Parse `1-4`, `1,2,4` or `2` into a sorted list of distinct positive ints.

    `0`, `4-1` and non-numbers are user errors.
    """
    if isinstance(text, int):
        text = str(text)
    if not isinstance(text, str):
        return parse_int_list(",".join(str(int(v)) for v in text), what=what)
    values: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise GreenkdError(f"empty entry in {what} list {text!r}")
        match = _RANGE.match(part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if lo > hi:
                raise GreenkdError(f"{what} range {part!r} runs backwards; write {hi}-{lo}")
            values.update(range(lo, hi + 1))
        elif part.isdigit():
            values.add(int(part))
        else:
            raise GreenkdError(f"{what} {part!r} is not a number or a range like 1-4")
    if 0 in values:
        raise GreenkdError(f"{what} must be >= 1, got 0 in {text!r}")
    return sorted(values)


def parse_choice_list(text: str | Iterable[str], choices: Iterable[str], *, what: str) -> list[str]:
    """Parse `binpack,rr` into a list, keeping order, rejecting unknown names."""
    items = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    allowed = list(choices)
    out: list[str] = []
    for item in items:
        if item not in allowed:
            raise GreenkdError(f"unknown {what} {item!r}: use one of {', '.join(allowed)}")
        if item not in out:
            out.append(item)
    if not out:
        raise GreenkdError(f"no {what} given")
    return out
