"""SweepSpec: experiment TOMLs and flags, the grid and its run names, presets, bad input through the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_fixtures import write_experiment

from greenkd.config import DataThreads, RunConfig
from greenkd.errors import GreenkdError
from greenkd.sweep import (
    DEFAULT_SWEEP_RUN,
    Machine,
    SweepSpec,
    check_devices,
    cores_per_device,
    sweep_dir_for,
)

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPO / "experiments"


# ----------------------------------------------------------------------------- the grid


def test_default_grid_runs_the_one_device_baseline_once_per_thread_setting():
    runs = SweepSpec().expand("results/default", cores_per_device=1)
    assert [r.name for r in runs] == [
        "g1-tauto-r0",
        "g2-rr-tauto-r0",
        "g2-binpack-tauto-r0",
        "g1-t1-r0",
        "g2-rr-t1-r0",
        "g2-binpack-t1-r0",
    ]
    baseline = runs[0]
    assert baseline.baseline_for == ("rr", "binpack") and baseline.config.sched == "rr"
    assert runs[4].config.data_threads == DataThreads(parallel_calls=1, max_intra_op_parallelism=1)
    assert runs[2].config.out == str(Path("results/default/g2-binpack-tauto-r0"))
    assert {r.config.cores_per_device for r in runs} == {1}
    # every other setting is the sweep's base run
    strip = ("gpus", "sched", "data_threads", "out", "cores_per_device")
    for r in runs:
        assert {k: v for k, v in r.config.to_dict().items() if k not in strip} == {
            k: v for k, v in DEFAULT_SWEEP_RUN.to_dict().items() if k not in strip
        }


def test_grid_is_devices_times_schedulers_times_threads_times_repeats():
    spec = SweepSpec.build(
        gpus="1,2,4", sched="binpack,rr,ws", data_threads="autotune,4", repeat=2, backend="dask"
    )
    runs = spec.expand("out/s", cores_per_device=3)
    # per repeat and thread setting: one shared 1-device run + 2 device counts x 3 schedulers
    assert len(runs) == 2 * 2 * (1 + 2 * 3)
    assert len({r.name for r in runs}) == len(runs)
    assert "g4-ws-t4-r1" in {r.name for r in runs} and "g1-t4-r1" in {r.name for r in runs}
    assert {r.config.backend for r in runs} == {"dask"}
    assert {(r.devices, r.config.gpus) for r in runs} == {(1, 1), (2, 2), (4, 4)}
    assert [r.repeat for r in runs].count(1) == len(runs) // 2
    g4 = next(r for r in runs if r.name == "g4-rr-tauto-r0")
    assert (g4.config.sched, g4.config.data_threads.label, g4.threads) == (
        "rr",
        "autotune",
        "autotune",
    )
    assert g4.meta("s") == {
        "sweep": "s",
        "run": "g4-rr-tauto-r0",
        "repeat": 0,
        "data_threads_label": "autotune",
        "baseline_for": [],
    }


def test_run_names_are_stable_across_expansions_and_flag_order():
    a = SweepSpec.build(gpus="2,1", sched="rr,binpack").expand("x")
    b = SweepSpec.build(gpus="1-2", sched="rr,binpack,rr").expand("x")
    assert [r.name for r in a] == [r.name for r in b]
    assert [r.config for r in a] == [r.config for r in b]


# ----------------------------------------------------------------------------- TOML and flags


def test_flags_override_the_experiment_file(tmp_path):
    path = write_experiment(
        tmp_path / "e.toml",
        name="paperish",
        sweep={
            "gpus": "1-4",
            "sched": ["binpack", "rr"],
            "data_threads": ["autotune", 4],
            "repeat": 3,
            "idle_seconds": 5,
        },
        run={"model": "vgg16", "width": 1.0, "epochs": 30, "finetune_epochs": 20},
    )
    spec = SweepSpec.build(path)
    assert (spec.name, spec.devices, spec.scheds, spec.repeat, spec.idle_seconds) == (
        "paperish",
        (1, 2, 3, 4),
        ("binpack", "rr"),
        3,
        5.0,
    )
    assert [t.label for t in spec.data_threads] == ["autotune", "4-intra1"]
    assert (spec.run.width, spec.run.epochs, spec.run.finetune_epochs) == (1.0, 30, 20)
    assert spec.experiment == str(path)
    over = SweepSpec.build(
        path,
        gpus="2",
        sched="ws",
        data_threads="8",
        repeat=1,
        name="mine",
        idle_seconds=0.0,
        backend="mpi",
        allow_oversubscribe=True,
    )
    assert (over.name, over.devices, over.scheds, over.repeat, over.idle_seconds, over.backend) == (
        "mine",
        (2,),
        ("ws",),
        1,
        0.0,
        "mpi",
    )
    assert over.allow_oversubscribe and [t.label for t in over.data_threads] == ["8-intra1"]
    assert over.run == spec.run  # the run settings stay the file's


def test_spec_round_trips_through_its_dict():
    spec = SweepSpec.build(gpus="1-3", sched="binpack", data_threads="autotune,2", repeat=2)
    again = SweepSpec.from_mapping(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def test_frameworks_are_a_grid_dimension_each_with_its_own_baseline(tmp_path):
    spec = SweepSpec.build(
        gpus="1,2", sched="rr,binpack", data_threads="autotune", framework="tensorflow,jax"
    )
    runs = spec.expand(tmp_path)
    assert [r.name for r in runs] == [
        f"{fw}-{rest}"
        for fw in ("tensorflow", "jax")
        for rest in ("g1-tauto-r0", "g2-rr-tauto-r0", "g2-binpack-tauto-r0")
    ]
    for run in runs:
        assert run.config.framework == run.framework == run.name.split("-")[0]
    # each framework has a 1-device run of its own, the baseline of its schedulers
    baselines = {r.framework: r.baseline_for for r in runs if r.devices == 1}
    assert baselines == {"tensorflow": ("rr", "binpack"), "jax": ("rr", "binpack")}
    again = SweepSpec.from_mapping(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.frameworks == ("tensorflow", "jax")
    # the same grid from an experiment file's [sweep] list
    path = write_experiment(
        tmp_path / "fw.toml",
        sweep={
            "gpus": [1, 2],
            "sched": ["rr", "binpack"],
            "data_threads": "autotune",
            "framework": ["tensorflow", "jax"],
        },
        run={},
        name="default",
    )
    from_file = SweepSpec.build(path)
    assert [r.name for r in from_file.expand(tmp_path)] == [r.name for r in runs]
    # one framework keeps the names sweeps had before frameworks were a dimension (resume works)
    one = SweepSpec.build(gpus="1,2", data_threads="autotune", framework="jax")
    assert [r.name for r in one.expand(tmp_path)][:2] == ["g1-tauto-r0", "g2-rr-tauto-r0"]
    assert one.run.framework == "jax" and "framework" not in one.to_dict()["sweep"]
    assert SweepSpec().frameworks == ("tensorflow",)
    both = tmp_path / "both.toml"
    both.write_text("[sweep]\nframework = ['jax']\n[run]\nframework = 'jax'\n")
    with pytest.raises(GreenkdError, match="not both"):
        SweepSpec.build(both)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[sweep]\ngpus = '0'\n", "got 0"),
        ("[sweep]\ngpus = ['a']\n", "'a' is not a number"),
        ("[sweep]\nsched = 'rr,fifo'\n", "unknown scheduler 'fifo'"),
        ("[sweep]\nrepeat = '2'\n", "[sweep] repeat must be a int"),
        ("[sweep]\nspeed = 1\n", "unknown [sweep] keys speed"),
        ("[run]\ngpus = 2\n", "set gpus under [sweep], not [run]"),
        ("[run]\nepochz = 2\n", "unknown run settings: epochz"),
        ("[run]\nepochs = 0\n", "--epochs must be >= 1"),
        ("[runs]\nepochs = 1\n", "unknown keys runs"),
        ("[sweep\n", "is not valid TOML"),
    ],
)
def test_bad_experiment_files_name_the_file_and_the_problem(tmp_path, text, says):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(GreenkdError) as err:
        SweepSpec.build(path)
    assert says in str(err.value) and str(path) in str(err.value)


# ----------------------------------------------------------------------------- presets


def test_default_toml_and_the_built_in_default_agree():
    from_file = SweepSpec.build(EXPERIMENTS / "default.toml")
    assert from_file == SweepSpec()
    assert from_file == SweepSpec.build()  # what `greenkd sweep` with no arguments runs
    # and the file states every run setting it relies on, so a changed RunConfig default cannot drift in
    import tomllib

    stated = tomllib.loads((EXPERIMENTS / "default.toml").read_text())["run"]
    differs = {
        f.name
        for f in dataclasses.fields(RunConfig)
        if getattr(DEFAULT_SWEEP_RUN, f.name) != getattr(RunConfig(), f.name)
    }
    assert differs <= set(stated)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (
            "vgg16-cifar10",
            {
                "model": "vgg16",
                "width": 1.0,
                "dataset": "cifar10",
                "epochs": 30,
                "finetune_epochs": 20,
                "batch_size": 256,
                "freeze_1x1": False,
            },
        ),
        (
            "resnet50-cifar10",
            {
                "model": "resnet50",
                "dataset": "cifar10",
                "epochs": 30,
                "finetune_epochs": 20,
                "batch_size": 256,
                "freeze_1x1": True,
            },
        ),
        (
            "resnet50-imagenet",
            {
                "dataset": "tfds:imagenet2012",
                "image_size": 224,
                "preprocess": "caffe",
                "epochs": 2,
                "finetune_epochs": 2,
                "batch_size": 256,
                "freeze_1x1": True,
            },
        ),
    ],
)
def test_paper_presets_hold_the_papers_settings(preset, expected):
    spec = SweepSpec.build(preset)  # found by name in experiments/
    assert spec.name == preset
    assert spec.devices == (1, 2, 3, 4) and spec.scheds == ("binpack", "rr")
    assert [t.label for t in spec.data_threads] == ["autotune", "4-intra1"]  # paper §4.3
    assert {k: getattr(spec.run, k) for k in expected} == expected


# ----------------------------------------------------------------------------- the machine


def test_device_counts_beyond_the_machine_need_oversubscription():
    cpu2 = Machine("cpu", 0, 2)
    check_devices(SweepSpec.build(gpus="1-2"), cpu2)
    with pytest.raises(
        GreenkdError, match="asks for 4 devices but this machine has no GPU and 2 CPU core"
    ):
        check_devices(SweepSpec.build(gpus="1,4"), cpu2)
    check_devices(SweepSpec.build(gpus="1,4", allow_oversubscribe=True), cpu2)
    gpu4 = Machine("gpu", 4, 16)
    check_devices(SweepSpec.build(gpus="1-4"), gpu4)
    with pytest.raises(GreenkdError, match="this machine has 4 GPU"):
        check_devices(SweepSpec.build(gpus="8"), gpu4)


def test_every_device_gets_the_cores_of_the_largest_run():
    assert cores_per_device(SweepSpec.build(gpus="1-4"), Machine("cpu", 0, 16)) == 4
    assert cores_per_device(SweepSpec.build(gpus="1-3"), Machine("cpu", 0, 16)) == 5
    assert (
        cores_per_device(
            SweepSpec.build(gpus="1,8", allow_oversubscribe=True), Machine("cpu", 0, 2)
        )
        == 1
    )


def test_a_new_sweep_never_reuses_a_directory_and_resume_takes_the_newest(tmp_path):
    spec = SweepSpec()
    assert sweep_dir_for(spec, tmp_path, resume=False, name_given=False) == tmp_path / "default"
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "sweep.json").write_text("{}")
    assert sweep_dir_for(spec, tmp_path, resume=False, name_given=False) == tmp_path / "default-2"
    (tmp_path / "default-2").mkdir()
    (tmp_path / "default-10").mkdir()
    assert sweep_dir_for(spec, tmp_path, resume=False, name_given=False) == tmp_path / "default-11"
    assert sweep_dir_for(spec, tmp_path, resume=True, name_given=False) == tmp_path / "default-10"
    assert sweep_dir_for(spec, tmp_path, resume=True, name_given=True) == tmp_path / "default"
    with pytest.raises(GreenkdError, match="already holds a sweep: add --resume"):
        sweep_dir_for(spec, tmp_path, resume=False, name_given=True)


# ----------------------------------------------------------------------------- the real CLI


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--gpus", "0"], "--gpus must be >= 1, got 0"),
        (["--gpus", "4-1"], "runs backwards"),
        (["--gpus", "a"], "'a' is not a number or a range"),
        (["--sched", "rr,fifo"], "unknown scheduler 'fifo'"),
        (["--gpus", "1-64"], "asks for 64 devices but this machine has"),
        (["--data-threads", "autotune,0"], "data threads '0'"),
        (["--repeat", "0"], "--repeat must be >= 1"),
        (["--backend", "slurm"], "unknown backend 'slurm'"),
        (["--experiment", "no-such-preset"], "no experiment 'no-such-preset'"),
        (["--name", "../up"], "sweep name '../up'"),
        (["--framework", "tensorflow,mxnet"], "unknown framework 'mxnet'"),
    ],
)
def test_bad_sweep_input_is_one_line_and_exit_2(tmp_path, args, says):
    proc = subprocess.run(
        [sys.executable, "-m", "greenkd", "sweep", *args, "--out", "res"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("greenkd: error: ")
    assert says in proc.stderr
    assert not (tmp_path / "res").exists()  # nothing started


def test_the_gpu_preset_is_sized_for_one_gpu_at_the_papers_settings():
    spec = SweepSpec.build("vgg16-cifar10-gpu")
    assert spec.devices == (1, 2) and spec.allow_oversubscribe and spec.scheds == ("binpack",)
    run = spec.run
    assert (run.model, run.width, run.dataset, run.batch_size) == ("vgg16", 1.0, "cifar10", 256)
    assert (run.epochs, run.finetune_epochs, run.teacher_epochs) == (30, 20, 60)
    assert run.fuse and run.acceptance == "threshold"
    check_devices(spec, Machine("gpu", 1, 16))  # two workers on the one GPU
