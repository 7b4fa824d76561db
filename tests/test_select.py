"""Which blocks make the student: target-mode selection on plain data, and once through distill().

The search (greenkd/distill/select.py) sees blocks as data and the expensive steps as callables;
here they are fakes whose answers are known, so each test knows the one right set.
"""

from __future__ import annotations

import json

import pytest

from greenkd.distill import select as choose

pytest.register_assert_rewrite("parallel_fixtures")  # also a plugin (pytest_plugins below)
from parallel_fixtures import parallel_env, tiny_config  # noqa: E402

pytest_plugins = ("parallel_fixtures",)  # small_teacher, parallel_root

TEACHER = 0.95
TEACHER_PARAMS, TEACHER_FLOPS = 10_000, 1_000_000
# name, params saved, own spliced top-1: each block's loss alone is teacher - top-1
BLOCKS = [
    choose.Block("conv1", 0, 100, 50_000, 0.95),  # free, but saves little: 100 / 0.1 (floor)
    choose.Block("conv2", 1, 2_000, 100_000, 0.94),  # 1 point: 2000 per point
    choose.Block("conv3", 2, 3_000, 100_000, 0.92),  # 3 points: 1000 per point
    choose.Block("conv4", 3, 1_000, 100_000, 0.90),  # 5 points: 200 per point
    choose.Block("conv5", 4, 2_500, 100_000, 0.85),  # 10 points: 250 per point
    choose.Block("conv6", 5, -50, 10, 0.95),  # a block bigger than its conv: never a candidate
]
RANKED = ["conv2", "conv3", "conv1", "conv5", "conv4"]
LOSS = {b.name: TEACHER - b.accuracy for b in BLOCKS}


def goal(**changes) -> choose.Goal:
    values = dict(
        mode="target",
        teacher_accuracy=TEACHER,
        teacher_params=TEACHER_PARAMS,
        teacher_flops=TEACHER_FLOPS,
        target_accuracy=0.01,
        resolution=0.001,
    )
    return choose.Goal(**{**values, **changes})


def spliced(names) -> float:
    """Losses add up when blocks are spliced in together."""
    return TEACHER - sum(LOSS[n] for n in names)


def evaluate_sets(sets):
    return [spliced(s) for s in sets]


class FineTune:
    """Fine-tuning wins back `recovery` of a set's spliced drop; every call is recorded."""

    def __init__(self, recovery: float | dict[int, float]) -> None:
        self.recovery = recovery
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, names) -> float:
        self.calls.append(tuple(names))
        r = self.recovery if isinstance(self.recovery, float) else self.recovery[len(names)]
        return spliced(names) + r * (TEACHER - spliced(names))


def test_blocks_rank_by_params_saved_per_point_lost_and_a_free_block_is_charged_one_image():
    ranked = choose.rank(BLOCKS, goal())
    assert [b.name for b, _ in ranked] == RANKED
    assert dict((b.name, s) for b, s in ranked)["conv2"] == pytest.approx(2_000)
    assert dict((b.name, s) for b, s in ranked)["conv1"] == pytest.approx(1_000)  # 100 / 0.1


def test_ranking_by_flops_puts_the_flops_saver_first():
    ranked = choose.rank(BLOCKS, goal(rank_by="flops"))
    assert ranked[0][0].name == "conv1"  # 50k FLOPs for a free block
    # it saves 10 FLOPs but has 50 more params: a block that grows on either count never helps
    assert "conv6" not in [b.name for b, _ in ranked]


def test_a_block_larger_on_either_count_is_never_a_candidate_whatever_is_ranked():
    """The rule that skips growing targets (targets.split) is the one that ranks blocks."""
    more_flops = choose.Block("wide", 6, 500, -1_000, 0.95)  # saves params, costs FLOPs
    for rank_by in ("params", "flops"):
        ranked = [b.name for b, _ in choose.rank([*BLOCKS, more_flops], goal(rank_by=rank_by))]
        assert "wide" not in ranked and "conv6" not in ranked
    assert choose.grows(500, -1_000) and choose.grows(-50, 10)
    assert not choose.grows(0, 0) and not choose.grows(100, 50_000)


def test_target_accuracy_picks_the_largest_prefix_whose_fine_tuned_top1_meets_the_target():
    # fine-tuning wins back 80%: a prefix meets a 1-point target while its spliced drop <= 5 points
    # prefixes: 1 point, 4, 4.1, 14.1, 19.1 -> the first three meet, the fourth does not
    tune = FineTune(0.8)
    selection = choose.by_target(BLOCKS, goal(), evaluate_sets, tune, prior_recovery=0.5)
    assert selection.chosen == ["conv2", "conv3", "conv1"] and selection.met is True
    saved = TEACHER_PARAMS - selection.sets[2].params
    assert saved == 5_100  # the largest saving of any set that meets the target
    for s in selection.sets:
        assert s.accuracy_spliced == pytest.approx(spliced(s.blocks))
        assert s.params == TEACHER_PARAMS - sum(
            b.params_saved for b in BLOCKS if b.name in s.blocks
        )
    # each try a real fine-tune; none beyond the tries allowed, none of a set already judged
    assert len(tune.calls) == selection.finetunes <= choose.MAX_TRIES
    assert len(set(tune.calls)) == len(tune.calls)
    assert "met the target" in selection.why
    record = selection.to_dict()
    json.dumps(record)  # summary.json holds it as is
    assert [s["n_blocks"] for s in record["sets"]] == [1, 2, 3, 4, 5]
    assert record["goal"]["needed_accuracy"] == pytest.approx(0.94)


def test_with_the_default_prior_the_whole_set_is_tried_first_and_kept_when_it_meets():
    # the default fine-tune wins back about all a set loses: one try of every block settles it
    tune = FineTune({5: 1.0})
    selection = choose.by_target(BLOCKS, goal(), evaluate_sets, tune)
    assert [len(c) for c in tune.calls] == [5]
    assert selection.chosen == RANKED and selection.met is True
    assert choose.PRIOR_RECOVERY == 1.0


def test_a_missed_target_backs_off_to_the_largest_set_the_measured_recovery_allows():
    # conv2 alone meets before fine-tuning; the prior expects no more, so one block more is tried
    # (2 blocks, 4 points spliced): fine-tuning wins back all of it, so all 5 are tried next; they
    # miss (half of 19 points back), and by that recovery neither 3 nor 4 blocks would meet
    tune = FineTune({2: 1.0, 5: 0.5})
    selection = choose.by_target(BLOCKS, goal(), evaluate_sets, tune, prior_recovery=0.5)
    assert [len(c) for c in tune.calls] == [2, 5]
    assert selection.chosen == RANKED[:2] and selection.met is True
    missed = selection.sets[4]
    assert missed.meets_target is False and missed.accuracy_finetuned == pytest.approx(0.855)
    assert selection.sets[2].accuracy_finetuned is None  # 3 and 4 blocks: not worth a try
    assert selection.recovery == pytest.approx(0.5)
    assert "5 blocks missed" in selection.why


def test_the_worst_ranked_block_is_backed_off_after_a_miss():
    # at 94% recovery 5 blocks miss by 0.15 points and 4 blocks are expected to meet: one less
    tune = FineTune({2: 1.0, 5: 0.94, 4: 0.94})
    selection = choose.by_target(BLOCKS, goal(), evaluate_sets, tune, prior_recovery=0.5)
    assert [len(c) for c in tune.calls] == [2, 5, 4]
    assert selection.chosen == RANKED[:4] and selection.met is True


def test_after_a_hit_a_set_expected_just_short_of_the_target_is_still_tried():
    # 90% recovered at 2 and 3 blocks: 4 blocks are expected at 93.6%, 0.4 points short of 94%,
    # within half the 1-point tolerance; a bigger set gets back a bigger share, and it does
    tune = FineTune({2: 0.9, 3: 0.9, 4: 0.95})
    selection = choose.by_target(BLOCKS, goal(), evaluate_sets, tune, prior_recovery=0.5)
    assert [len(c) for c in tune.calls] == [2, 3, 4]
    assert selection.chosen == RANKED[:4]
    # where it does not, the set that met stays chosen
    tune = FineTune({2: 0.9, 3: 0.9, 4: 0.9})
    assert (
        choose.by_target(BLOCKS, goal(), evaluate_sets, tune, prior_recovery=0.5).chosen
        == RANKED[:3]
    )


def test_tries_are_bounded():
    tune = FineTune({2: 1.0, 5: 0.94, 4: 0.94})
    selection = choose.by_target(
        BLOCKS, goal(), evaluate_sets, tune, max_tries=2, prior_recovery=0.5
    )
    assert len(tune.calls) == 2 and selection.chosen == RANKED[:2]
    assert "2 of 2 tries spent" in selection.why


def test_when_every_try_misses_the_closest_miss_is_chosen_and_said():
    tune = FineTune(0.0)  # fine-tuning recovers nothing; only conv2 alone (-1 point) meets ...
    g = goal(target_accuracy=0.005)  # ... so with a half-point target nothing does
    selection = choose.by_target(BLOCKS, g, evaluate_sets, tune, prior_recovery=0.5)
    assert selection.met is False and selection.chosen == ["conv2"]
    assert selection.why.startswith("closest miss")
    assert len(tune.calls) == 1  # the model expects nothing better after a miss at one block


def test_without_fine_tuning_the_spliced_top1_decides_and_nothing_is_trained():
    selection = choose.by_target(
        BLOCKS, goal(target_accuracy=0.042), evaluate_sets, None, prior_recovery=0.5
    )
    assert selection.chosen == ["conv2", "conv3", "conv1"]  # 4.1 points spliced
    assert selection.finetunes == 0


def test_target_params_picks_the_fewest_blocks_that_reach_the_ratio():
    def no_finetune(names):
        raise AssertionError("a params target needs no fine-tune to choose")

    # 10000 params; 1.5x needs <= 6667: conv2+conv3 leave 5000 (2x), conv2 alone 8000 (1.25x)
    selection = choose.by_target(
        BLOCKS, goal(target_params=1.5), evaluate_sets, no_finetune, prior_recovery=0.5
    )
    assert selection.chosen == ["conv2", "conv3"] and selection.met is True
    assert selection.sets[1].compression_params == pytest.approx(2.0)
    beyond = choose.by_target(
        BLOCKS, goal(target_params=20), evaluate_sets, no_finetune, prior_recovery=0.5
    )
    assert beyond.met is False and beyond.chosen == RANKED  # closest: every block that saves
    assert "closest miss" in beyond.why


def test_threshold_mode_keeps_each_block_that_passes_alone_as_the_paper():
    g = goal(mode="threshold", max_drop=0.03)
    selection = choose.by_threshold(BLOCKS, g)
    assert selection.chosen == ["conv1", "conv2", "conv3", "conv6"]  # model order, 3 points
    assert selection.sets == [] and selection.met is None
    floor = choose.by_threshold(BLOCKS, goal(mode="threshold", max_drop=None, min_accuracy=0.9))
    assert floor.chosen == ["conv1", "conv2", "conv3", "conv4", "conv6"]
    # the rule assemble.accepted applies in the tasks loop is this one
    assert choose.passes_threshold(0.93, 0.95, 0.02, None)
    assert not choose.passes_threshold(0.9299, 0.95, 0.02, None)


def _summary(**changes):
    summary = {
        "n_targets": 13,
        "accepted": ["a"],
        "compression_params": 1.04,
        "teacher_accuracy": 0.9,
        "student_accuracy_before_finetune": 0.805,
        "student_accuracy": 0.905,
        "selection": {"mode": "threshold", "met": None},
    }
    return {**summary, **changes}


def test_diagnosis_names_a_weak_teacher_a_tiny_validation_split_and_a_strict_threshold():
    lines = choose.diagnose(
        _summary(),
        n_val=359,
        block_accuracies=[0.87, 0.836, 0.88, 0.89],
        goal=goal(mode="threshold", max_drop=0.02, teacher_accuracy=0.9),
        finetune_epochs=2,
    )
    text = "\n".join(lines)
    assert "1 of 13 blocks" in lines[0]
    assert "90.0%" in text and "--teacher-epochs" in text
    assert "359 images" in text and "0.28 points" in text and "--n-val" in text
    assert "recovered 10.0 points" in text and "--acceptance target" in text


def test_no_diagnosis_for_a_student_that_is_small_and_meets_its_target():
    lines = choose.diagnose(
        _summary(
            accepted=list("abcdefgh"),
            compression_params=2.5,
            teacher_accuracy=0.98,
            student_accuracy=0.975,
            selection={"mode": "target", "met": True},
        ),
        n_val=2000,
        block_accuracies=[0.97] * 13,
        goal=goal(teacher_accuracy=0.98),
        finetune_epochs=2,
    )
    assert lines == []


def test_diagnosis_of_a_missed_target_says_what_the_best_set_reached():
    lines = choose.diagnose(
        _summary(
            teacher_accuracy=0.98,
            selection={"mode": "target", "met": False, "sets": [{"accuracy_finetuned": 0.95}]},
        ),
        n_val=2000,
        block_accuracies=[0.9] * 13,
        goal=goal(teacher_accuracy=0.98),
        finetune_epochs=2,
    )
    assert any("95.00%" in line and "--target-accuracy" in line for line in lines)


@pytest.mark.slow
def test_distill_in_target_mode_records_the_sets_tried_and_meets_its_target(
    small_teacher, parallel_root, tmp_path, monkeypatch
):
    """One run on the 5-conv teacher (~20 s): summary.json says what was tried and why, and the
    student it wrote is the chosen set, whose measured top-1 meets the target."""
    from greenkd.distill.run import distill

    for key, value in parallel_env(parallel_root).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "run"
    # 4 epochs per task leave weak blocks (48-51% spliced against a 93% teacher; one epoch of
    # fine-tuning lifts the best to ~66%): a 35-point target takes the best one, and its search
    # fine-tunes at least one bigger set to find that out
    cfg = tiny_config(
        small_teacher,
        out,
        acceptance="target",
        target_accuracy=0.35,
        finetune_epochs=1,
        gpus=1,
        cores_per_device=None,
        fuse=True,
        block_costs=False,  # the pass's per-block costs: not what this test reads
    )
    summary = distill(cfg)
    saved = json.loads((out / "summary.json").read_text())
    selection = saved["selection"]
    need = saved["teacher_accuracy"] - 0.35
    assert selection["mode"] == "target" and selection["goal"]["target_accuracy"] == 0.35
    assert selection["goal"]["needed_accuracy"] == pytest.approx(need)
    # conv1 (3 -> 8 channels) is cheaper than any block: never a candidate, always rejected
    assert [s["n_blocks"] for s in selection["sets"]] == [1, 2, 3, 4]
    assert "conv1" in saved["rejected"] and "conv1" not in selection["sets"][-1]["blocks"]
    for s in selection["sets"]:
        assert 0 <= s["accuracy_spliced"] <= 1 and s["params"] < summary["teacher_params"]
    tried = [s for s in selection["sets"] if s["accuracy_finetuned"] is not None]
    assert 1 <= len(tried) == selection["finetunes"] <= 3 and selection["finetune_epochs"] == 1
    assert selection["met"] is True and selection["why"].startswith("met the target")
    [chosen] = [s for s in selection["sets"] if s["blocks"] == selection["chosen"]]
    measured = chosen["accuracy_finetuned"] or chosen["accuracy_spliced"]
    assert measured >= need - 1e-9 and chosen["meets_target"] is True
    # the student it wrote really is that set, and (1 epoch of fine-tuning) meets the target too
    assert sorted(saved["accepted"]) == sorted(selection["chosen"])
    assert saved["student_params"] == chosen["params"]
    assert saved["student_flops"] == chosen["flops"]
    assert saved["student_accuracy_before_finetune"] == chosen["accuracy_spliced"]
    assert saved["student_accuracy"] >= need - 1e-9
    assert "select" in saved["seconds"] and isinstance(saved["diagnosis"], list)


def test_diagnosis_says_when_fine_tuning_lowered_top1():
    sets = [{"n_blocks": 3, "accuracy_spliced": 0.9666, "accuracy_finetuned": 0.9415}]
    lines = choose.diagnose(
        _summary(
            teacher_accuracy=0.9777,
            student_accuracy=0.9777,
            selection={"mode": "target", "met": True, "sets": sets, "recovery": -2.25},
        ),
        n_val=2000,
        block_accuracies=[0.97] * 13,
        goal=goal(teacher_accuracy=0.9777),
        finetune_epochs=2,
    )
    text = "\n".join(lines)
    assert "96.66% -> 94.15%" in text and "--finetune-lr" in text
    assert "won back" not in text  # a negative recovery is said as the drop it is


def test_a_set_whose_fine_tune_lowered_top1_is_judged_by_its_spliced_top1():
    tune = FineTune(-0.5)  # fine-tuning makes every set worse
    selection = choose.by_target(
        BLOCKS, goal(target_accuracy=0.005), evaluate_sets, tune, prior_recovery=0.5
    )
    assert selection.met is False and selection.chosen == ["conv2"]
    assert "94.00%" in selection.why  # its spliced top-1, not the 93.5% fine-tuning left


# ----------------------------------------------------------------------------- the report


def _sweep_with_selection(tmp_path, selection_of):
    from run_fixtures import RunSpec, write_sweep

    specs = [RunSpec(name=f"{s}-n{n}", gpus=n, sched=s) for s in ("rr", "binpack") for n in (1, 2)]
    sweep = write_sweep(tmp_path, "sweep", specs)
    for spec in specs:
        path = sweep / spec.name / "summary.json"
        summary = json.loads(path.read_text())
        summary.update(n_targets=5, accepted=["conv2", "conv3"], compression_params=2.0)
        if selection_of(spec) is not None:
            summary["selection"] = selection_of(spec)
        path.write_text(json.dumps(summary))
    return sweep


def test_report_draws_the_sets_tried_once_per_distinct_curve_with_teacher_and_target(tmp_path):
    from greenkd.analysis import load_sweep
    from greenkd.report import build_report

    tune = FineTune({2: 1.0, 5: 0.94, 4: 0.94})
    record = choose.by_target(BLOCKS, goal(), evaluate_sets, tune, prior_recovery=0.5).to_dict()
    report = build_report(load_sweep(_sweep_with_selection(tmp_path, lambda spec: record)))
    [fig] = [f for f in report.figures if f.layout.title.text.startswith("Block sets tried")]
    names = [t.name for t in fig.data]
    # both schedulers' groups tried the same sets: one curve, the other group named with it
    spliced = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(spliced) == 1 and "(+1 more)" in spliced[0].name
    assert spliced[0].x[0] == 1.0 and len(spliced[0].x) == 6  # the teacher, then 5 sets
    tuned = next(t for t in fig.data if t.name.endswith("after a brief fine-tune"))
    assert len(tuned.x) == 3  # the three sets fine-tuned
    assert "teacher" in names and any(n.endswith(": student") for n in names)
    assert any("target 94.00%" in (a.text or "") for a in fig.layout.annotations)
    assert "Block selection" in report.html and "met the target" in report.html


def test_report_says_why_threshold_runs_have_no_curve(tmp_path):
    from greenkd.analysis import load_sweep
    from greenkd.report import build_report

    record = choose.by_threshold(BLOCKS, goal(mode="threshold", max_drop=0.02)).to_dict()
    report = build_report(load_sweep(_sweep_with_selection(tmp_path, lambda spec: record)))
    assert not [f for f in report.figures if f.layout.title.text.startswith("Block sets")]
    assert "threshold mode: each block kept on its own spliced top-1" in report.html
    old = build_report(load_sweep(_sweep_with_selection(tmp_path / "old", lambda spec: None)))
    assert "a run from before greenkd chose block sets" in old.html


@pytest.mark.parametrize(
    "preset", ["default", "vgg16-cifar10", "resnet50-cifar10", "resnet50-imagenet"]
)
def test_the_paper_presets_and_the_scaling_sweep_keep_the_per_block_threshold(preset):
    from greenkd.sweep.spec import SweepSpec

    assert SweepSpec.build(preset).run.acceptance == "threshold"
