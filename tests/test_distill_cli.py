"""`greenkd distill` end to end through the real CLI, bad input, and interruption."""

from __future__ import annotations

import csv
import dataclasses
import json
import signal
import subprocess
import sys
import time

import pytest

from greenkd.rundir import TASK_COLUMNS

GREENKD = [sys.executable, "-m", "greenkd"]
TINY = [
    "--width",
    "0.0625",
    "--n-train",
    "1024",
    "--n-val",
    "256",
    "--teacher-epochs",
    "8",
    "--batch-size",
    "32",
    "--epochs",
    "2",
    "--finetune-epochs",
    "1",
    "--acceptance",  # the per-block rule the end-to-end test asserts; target adds fine-tunes
    "threshold",
    "--replace-growing",  # all 13 convs, as tiny_setup (the first three have larger blocks)
    "--quiet",
]


def run(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*GREENKD, *args], capture_output=True, text=True, timeout=600, **kw)


def test_distill_end_to_end_writes_the_run_directory(tmp_path, tiny_setup):
    out = tmp_path / "run"
    # accept every block, so the student really is assembled from all 13; one epoch per task
    # (evaluated at its end) and no fine-tuning (tracing the 13-block student's training step
    # alone takes ~15 s; the sweep tests fine-tune) are enough to write every file of the run
    proc = run(
        "distill", *TINY, "--epochs", "1", "--finetune-epochs", "0", "--max-drop", "1",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((out / "tasks.csv").open()))
    assert [r["task"] for r in rows] == [t.name for t in tiny_setup.targets]
    assert set(TASK_COLUMNS) <= set(rows[0])
    assert all(float(r["end"]) > float(r["start"]) > 1e9 for r in rows)
    # one fused pass (the default) of all 13: each block's own measured cost and the shared trunk's
    assert len({(r["fused_group"], r["start"], r["end"], r["trunk_step_s"]) for r in rows}) == 1
    assert rows[0]["fused_group"].split(",") == [r["task"] for r in rows]
    trunk_step, steps = float(rows[0]["trunk_step_s"]), 1024 // 32  # --n-train / --batch-size
    assert 0 < trunk_step < 60
    for r in rows:
        block_step = float(r["block_step_s"])
        assert 0 < block_step < 60, r["task"]
        # tasks.csv keeps 6 significant digits
        expected = block_step * steps * int(r["epochs"])
        assert float(r["seconds_block"]) == pytest.approx(expected, rel=1e-4)
        assert float(r["seconds_trunk"]) == pytest.approx(trunk_step * steps * 1, rel=1e-4)
    # measured alone, the parts of the pass come to less than the pass itself (it traced and
    # compiled its step, evaluated every block and spliced student on the validation set)
    measured = sum(float(r["seconds_block"]) for r in rows) + float(rows[0]["seconds_trunk"])
    assert measured < float(rows[0]["end"]) - float(rows[0]["start"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["error"] is None
    assert summary["timings_recorded"] == 13  # the pass, split by its measured per-block costs
    assert summary["student_params"] < summary["teacher_params"]
    assert summary["student_flops"] < summary["teacher_flops"]
    assert (
        summary["accepted"]
        == [r["task"] for r in rows]
        == [r["task"] for r in rows if r["accepted"] == "true"]
    )
    assert set(summary["seconds"]) >= {"setup", "tasks", "assemble", "finetune", "total"}
    assert len(list((out / "blocks").glob("*.npz"))) == 13
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["width"] == 0.0625 and config["meta"]["version"]

    from greenkd.framework import keras

    student = keras.saving.load_model(out / "student.keras")
    assert student.output.shape == tiny_setup.teacher.model.output.shape
    assert student.count_params() == summary["student_params"]


def _only_dense_model(path):
    from greenkd.framework import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 1)(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.mark.parametrize(
    "args, says",
    [
        (["--dataset", "imagenet-please"], "unknown dataset"),
        (["--model", "vgg19"], "unknown model"),
        (["--model", "/nowhere/teacher.keras"], "does not exist"),
        (["--max-drop", "1.5"], "--max-drop must be between 0 and 1"),
        (["--min-accuracy", "-0.1"], "--min-accuracy must be between 0 and 1"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--block", "z"], "--block must be one of"),
        (["--finetune-batch-norm", "sync"], "--finetune-batch-norm must be one of batch, frozen"),
        (["--data-threads", "many"], "data threads"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, says):
    proc = run("distill", *args, "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and says in errors[0], proc.stderr


def test_model_without_compressible_layers_is_a_user_error(tmp_path):
    model = _only_dense_model(tmp_path / "dense.keras")
    proc = run(
        "distill",
        "--model",
        str(model),
        "--n-train",
        "64",
        "--n-val",
        "32",
        "--out",
        str(tmp_path / "run"),
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no compressible layer" in proc.stderr
    proc = run("targets", str(model))
    assert proc.returncode == 2 and "no compressible layer" in proc.stderr


def _stem_only_model(path):
    """One compressible layer, 3 -> 8 channels: its block (295 params) is larger (224)."""
    from greenkd.framework import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(16, 1, name="mix")(x))
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)
    return path


def test_a_model_whose_only_compressible_layer_grows_exits_2_naming_it_and_the_flag(tmp_path):
    model = _stem_only_model(tmp_path / "stem.keras")
    out = tmp_path / "run"
    proc = run(
        "distill", "--model", str(model), "--n-train", "64", "--n-val", "32", "--out", str(out)
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    assert "no compressible layer" in errors[0] and "stem: block a is larger" in errors[0]
    assert "params 224 -> 295" in errors[0] and "--replace-growing" in errors[0]
    assert (
        not (out / "tasks.csv").exists() or len((out / "tasks.csv").read_text().splitlines()) <= 1
    )


def test_the_run_table_names_the_layers_skipped_for_a_larger_block():
    from rich.console import Console

    from greenkd.cli.progress import summary_table

    summary = {
        "teacher_params": 231_218,
        "student_params": 71_600,
        "teacher_flops": 10_175_744,
        "student_flops": 3_690_000,
        "teacher_accuracy": 0.998,
        "student_accuracy": 0.996,
        "accepted": [f"b{i}" for i in range(12)],
        "n_targets": 12,
        "seconds": {"total": 100.0},
        "skipped_targets": [{"name": "block1_conv1", "reason": "block a is larger"}],
    }
    console = Console(width=120, record=True)
    console.print(summary_table(summary))
    row = next(line for line in console.export_text().splitlines() if "skipped" in line)
    assert "block1_conv1" in row and "block larger than conv" in row
    del summary["skipped_targets"]  # a run with nothing skipped has no such row
    console = Console(width=120, record=True)
    console.print(summary_table(summary))
    assert "skipped" not in console.export_text()


@pytest.mark.slow
def test_a_default_run_skips_the_growing_convs_and_its_summary_says_which_and_why(
    tmp_path, tiny_setup, tiny_cfg
):
    """At width 1/16 the blocks of the first three convs have more params than the convs: a run
    without --replace-growing has the other ten as its tasks, and spends no time on the three.
    The run itself trains three of the ten (one epoch each): what it writes about the skipped
    convs does not depend on how many tasks it trains, and a 10-block pass traces 3x longer."""
    from greenkd.distill.run import distill
    from greenkd.distill.setup import prepare

    out = tmp_path / "run"
    cfg = tiny_cfg.replace(
        replace_growing=False, epochs=1, finetune_epochs=0, accept_max_drop=1.0, out=str(out),
        block_costs=False,  # the pass's per-block costs: not what this test reads
    )  # fmt: skip
    setup = prepare(cfg)  # the session's cached teacher
    grow = ["block1_conv1", "block1_conv2", "block2_conv1"]
    assert [s.target.name for s in setup.skipped] == grow
    assert setup.names == tuple(t.name for t in tiny_setup.targets if t.name not in grow)
    setup = dataclasses.replace(setup, targets=setup.targets[-3:])
    distill(cfg, setup=setup)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["n_targets"] == 3 and summary["n_skipped"] == 3
    assert [s["name"] for s in summary["skipped_targets"]] == grow
    for s in summary["skipped_targets"]:
        assert s["params_after"] > s["params_before"] and s["reason"].startswith("block a is")
    rows = list(csv.DictReader((out / "tasks.csv").open()))
    assert [r["task"] for r in rows] == list(setup.names)  # no time spent on the skipped ones
    assert not set(grow) & set(summary["accepted"] + summary["rejected"])
    assert summary["student_params"] < summary["teacher_params"]


def test_interrupted_run_keeps_finished_tasks_and_says_partial(tmp_path, tiny_setup):
    out = tmp_path / "run"
    # Independent tasks write their rows one by one: the second row is the event to wait for,
    # with eleven tasks still to run when the signal comes (a fused pass writes every row at
    # its end, just before the run finishes, which a slow machine can race past).
    proc = subprocess.Popen(
        [*GREENKD, "distill", *TINY, "--no-fuse", "--epochs", "3", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as a shell's foreground job gets it: a suite started in the background of a
        # non-interactive shell (`pytest &`) runs with SIGINT ignored, which a child inherits,
        # and the run then cannot be interrupted at all (it exited 0 twice that way)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    tasks = out / "tasks.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if tasks.exists() and len(tasks.read_text().splitlines()) >= 3:  # header + 2 tasks
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial"
    rows = list(csv.DictReader(tasks.open()))
    cut = summary.get("interrupted_tasks", [])  # the task in flight, if it was evaluated once
    done = [r for r in rows if r["task"] not in cut]
    assert len(done) >= 2 and summary["tasks_done"] == len(done)
    assert all(r["epochs"] == "3" for r in done) and len(cut) <= 1
    assert all(int(r["epochs"]) < 3 for r in rows if r["task"] in cut)
    assert {p.stem for p in (out / "blocks").glob("*.npz")} == {r["task"] for r in rows}
