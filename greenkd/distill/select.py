"""Which blocks make the student: acceptance aimed at the student the user wants.

The paper's Algorithm 1 keeps each block on its own spliced top-1 (`acceptance="threshold"`,
`by_threshold`). On real data that rule rejects blocks that fine-tuning would have made good:
with a 2-point threshold every deep block of a digits VGG16 was rejected, yet fine-tuning lifted
the assembled student by 10 points. `acceptance="target"` (`by_target`) instead chooses the set of
blocks that best meets the goal for the fine-tuned student:

1. rank the blocks by what each saves per point of top-1 it costs alone (`rank`);
2. splice the ranked blocks in cumulatively and measure each prefix's top-1 before fine-tuning
   (one model with a branch per prefix: cheap, no training);
3. `target_accuracy`: search the prefixes for the largest whose top-1 after a brief fine-tune
   meets the target, each try a real fine-tune (bounded by `max_tries`), the next try placed by
   what the last one measured (`_probe`); `target_params`: the shortest prefix that reaches the
   compression ratio (accuracy is reported, not aimed at: no fine-tune is needed to choose).

Everything here is plain data; the expensive steps (splicing and evaluating, fine-tuning) come
in as callables, so the search is tested without TensorFlow (tests/test_select.py) and
`greenkd.distill.run` passes in the real ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Before any try has measured it, assume fine-tuning wins back all the top-1 that splicing lost,
# so that the first try is the largest set. Measured with the default fine-tune (10 epochs of
# the blocks): 12 blocks on digits went from 57.9% spliced to 98.9% (teacher 98.3%), on the
# synthetic default from 74.9% to 99.6% (teacher 99.8%): the whole set usually meets the target
# in one try, and a miss measures the share actually won back, which places the next try.
# (With 1-epoch fine-tunes the share was 0.6-0.8.)
PRIOR_RECOVERY = 1.0
# Brief fine-tunes a target-accuracy selection may run. Each costs an assembly (~1 s), tracing
# the student's training step and its epochs: with one epoch 7 s for a 3-block, 22 s for a
# 12-block VGG16 (width 1/8, digits) student on a 2-core CPU, most of it tracing.
MAX_TRIES = 3
# After a try that met the target, a set the recovery model expects to fall short by at most this
# share of the tolerance is still worth a try (see `_probe`).
EXPLORE_MARGIN = 0.5

EvaluateSets = Callable[[Sequence[tuple[str, ...]]], list[float]]
FinetuneAndEvaluate = Callable[[tuple[str, ...]], float]


@dataclass(frozen=True)
class Block:
    """One finished layer task as the selection sees it."""

    name: str
    index: int  # position in the model
    params_saved: int  # the conv's params minus its block's
    flops_saved: int  # per image
    accuracy: float  # the teacher's top-1 with this block alone spliced in (0-1)


@dataclass(frozen=True)
class Goal:
    """What the student should be, and the facts of the teacher it is measured against."""

    mode: str  # "target" or "threshold"
    teacher_accuracy: float
    teacher_params: int
    teacher_flops: int
    target_accuracy: float = 0.01  # target: the student's top-1 at most this below the teacher's
    target_params: float | None = None  # target: teacher / student params >= this instead
    max_drop: float | None = 0.02  # threshold: a block's spliced top-1 >= teacher - this
    min_accuracy: float | None = None  # threshold: and/or >= this
    resolution: float = 0.0  # one validation image, as a fraction of top-1
    rank_by: str = "params"  # "params" or "flops": what a block saves, per point it costs

    @property
    def needed_accuracy(self) -> float:
        """The top-1 the fine-tuned student must reach in target-accuracy mode."""
        return self.teacher_accuracy - self.target_accuracy


@dataclass
class Tried:
    """One candidate set: the first `n_blocks` blocks in rank order."""

    blocks: list[str]
    params: int
    flops: int
    compression_params: float  # teacher params / student params
    accuracy_spliced: float  # before fine-tuning
    accuracy_finetuned: float | None = None  # after the brief fine-tune, where one ran
    meets_target: bool | None = None  # None: not judged (no fine-tune ran and it was not needed)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)


@dataclass
class Selection:
    """The outcome: the chosen blocks, every set tried, and why this one."""

    mode: str
    goal: dict[str, Any]
    chosen: list[str]  # in rank order
    why: str
    met: bool | None  # whether the chosen set met the goal (None: threshold mode)
    ranked: list[dict[str, Any]] = field(default_factory=list)
    sets: list[Tried] = field(default_factory=list)
    finetunes: int = 0  # brief fine-tunes run
    finetune_epochs: int | None = None  # epochs of each brief fine-tune
    # the share of the spliced drop fine-tuning won back, as last measured (None: never)
    recovery: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sets"] = [{**asdict(s), "n_blocks": s.n_blocks} for s in self.sets]
        return out


def grows(params_saved: int, flops_saved: int) -> bool:
    """Whether a block has more parameters or more FLOPs than the conv it replaces.

    Such a block can only make the student larger on one count, so it is never a layer task by
    default (`greenkd.distill.targets.split`) nor a candidate set member in target mode (`rank`):
    the one rule for "no smaller" (e.g. VGG16's first conv, 3 channels in, at any width).
    """
    return params_saved < 0 or flops_saved < 0


def passes_threshold(
    accuracy: float,
    teacher_accuracy: float,
    max_drop: float | None,
    min_accuracy: float | None,
) -> bool:
    """The paper's per-block rule (Algorithm 1, line 13): a block's own spliced top-1 is enough."""
    ok = True
    if max_drop is not None:
        # a tiny tolerance so that "no drop" accepts a block that ties the teacher
        ok &= accuracy >= teacher_accuracy - max_drop - 1e-9
    if min_accuracy is not None:
        ok &= accuracy >= min_accuracy - 1e-9
    return bool(ok)


def by_threshold(blocks: Sequence[Block], goal: Goal) -> Selection:
    """Threshold mode: every block that passes the per-block rule on its own, as the paper."""
    chosen = [
        b.name
        for b in sorted(blocks, key=lambda b: b.index)
        if passes_threshold(b.accuracy, goal.teacher_accuracy, goal.max_drop, goal.min_accuracy)
    ]
    rule = []
    if goal.max_drop is not None:
        rule.append(f"at most {goal.max_drop * 100:.2f} points below the teacher")
    if goal.min_accuracy is not None:
        rule.append(f"at least {goal.min_accuracy:.2%}")
    return Selection(
        mode="threshold",
        goal={"max_drop": goal.max_drop, "min_accuracy": goal.min_accuracy},
        chosen=chosen,
        why=f"each block on its own spliced top-1 ({' and '.join(rule) or 'no rule'}); "
        "no sets tried",
        met=None,
    )


def rank(blocks: Sequence[Block], goal: Goal) -> list[tuple[Block, float]]:
    """Blocks that save what is ranked and grow nothing (`grows`), best first: saving per point
    of top-1 the block costs alone.

    A block that costs nothing (or gains) is charged one validation image (at least 0.1 points),
    so among such blocks the bigger saving ranks first instead of all dividing by zero; the other
    saving (FLOPs when ranking by params) breaks ties, then model order.
    """
    floor = max(goal.resolution, 0.001)
    by_flops = goal.rank_by == "flops"
    scored = []
    for b in blocks:
        saved, other = (
            (b.flops_saved, b.params_saved) if by_flops else (b.params_saved, b.flops_saved)
        )
        if grows(b.params_saved, b.flops_saved) or saved <= 0 or not math.isfinite(b.accuracy):
            continue  # a block no smaller than its conv never helps
        cost_points = max(goal.teacher_accuracy - b.accuracy, floor) * 100
        scored.append((b, saved / cost_points, other))
    scored.sort(key=lambda s: (-s[1], -s[2], s[0].index))
    return [(b, score) for b, score, _ in scored]


def by_target(
    blocks: Sequence[Block],
    goal: Goal,
    evaluate_sets: EvaluateSets,
    finetune_and_evaluate: FinetuneAndEvaluate | None,
    *,
    max_tries: int = MAX_TRIES,
    prior_recovery: float = PRIOR_RECOVERY,
) -> Selection:
    """Target mode: the ranked prefix that best meets `goal` (module docstring).

    `evaluate_sets(sets)` returns each set's spliced top-1 (before fine-tuning);
    `finetune_and_evaluate(set)` fine-tunes a student of that set briefly and returns its top-1,
    or is None when the run does not fine-tune (then the spliced top-1 is the final one).
    """
    ranked = rank(blocks, goal)
    prefixes = [tuple(b.name for b, _ in ranked[:k]) for k in range(1, len(ranked) + 1)]
    spliced = evaluate_sets(prefixes) if prefixes else []
    sets = []
    params, flops = goal.teacher_params, goal.teacher_flops
    for (b, _), names, accuracy in zip(ranked, prefixes, spliced, strict=True):
        params, flops = params - b.params_saved, flops - b.flops_saved
        sets.append(
            Tried(list(names), params, flops, goal.teacher_params / params, float(accuracy))
        )
    selection = Selection(
        mode="target",
        goal={
            "target_accuracy": None if goal.target_params else goal.target_accuracy,
            "target_params": goal.target_params,
            "needed_accuracy": None if goal.target_params else goal.needed_accuracy,
            "rank_by": goal.rank_by,
        },
        chosen=[],
        why="",
        met=None,
        ranked=[
            {"block": b.name, "accuracy": b.accuracy, "saved_per_point": score}
            for b, score in ranked
        ],
        sets=sets,
    )
    if goal.target_params is not None:
        _aim_at_params(selection, goal)
    else:
        _aim_at_accuracy(selection, goal, finetune_and_evaluate, max_tries, prior_recovery)
    return selection


def _aim_at_params(selection: Selection, goal: Goal) -> None:
    """The shortest prefix whose compression reaches the ratio; all blocks if none does."""
    ratio = goal.target_params
    for s in selection.sets:
        s.meets_target = s.compression_params >= ratio - 1e-9
    reaching = [s for s in selection.sets if s.meets_target]
    if reaching:
        best = reaching[0]
        selection.chosen, selection.met = best.blocks, True
        selection.why = (
            f"the fewest best-ranked blocks ({best.n_blocks}) that make the student "
            f"{best.compression_params:.2f}x smaller (target {ratio:g}x)"
        )
    elif selection.sets:
        best = selection.sets[-1]
        selection.chosen, selection.met = best.blocks, False
        selection.why = (
            f"closest miss: every block that saves parameters ({best.n_blocks}) makes the "
            f"student only {best.compression_params:.2f}x smaller (target {ratio:g}x)"
        )
    else:
        selection.met = ratio <= 1
        selection.why = "no block saves parameters: the student is the teacher"


def _aim_at_accuracy(
    selection: Selection,
    goal: Goal,
    finetune_and_evaluate: FinetuneAndEvaluate | None,
    max_tries: int,
    prior_recovery: float,
) -> None:
    """The largest prefix whose top-1 after fine-tuning meets the target, in a few tries.

    `lo` is the largest prefix known to meet the target (0: the teacher itself), `hi` the
    smallest known to miss. Each try fine-tunes the prefix the recovery model (`_probe`) expects
    to be the largest that meets it, inside (lo, hi), and moves lo or hi: after a miss the next
    try backs off at least the worst-ranked block, more where the measured recovery says one
    block is not enough; after a hit it goes up. It stops when lo and hi meet, the model expects
    nothing in between to meet (after a hit: nothing within EXPLORE_MARGIN of it), or the tries
    run out.
    """
    sets, need = selection.sets, goal.needed_accuracy
    n = len(sets)
    for s in sets:  # a prefix that meets the target before fine-tuning needs no try
        if s.accuracy_spliced >= need - 1e-9:
            s.meets_target = True
    if finetune_and_evaluate is None:  # no fine-tuning in this run: spliced top-1 is final
        for s in sets:
            s.meets_target = s.accuracy_spliced >= need - 1e-9
    lo = max([k for k in range(1, n + 1) if sets[k - 1].meets_target] or [0])
    hi = n + 1
    recovery, last_hit = prior_recovery, False
    while finetune_and_evaluate is not None and selection.finetunes < max_tries and hi - lo > 1:
        sure = lo > 0 and selection.recovery is not None
        k = _probe(sets, goal, lo, hi, recovery, sure=sure, after_hit=last_hit)
        if k is None:
            break
        s = sets[k - 1]
        s.accuracy_finetuned = float(finetune_and_evaluate(tuple(s.blocks)))
        selection.finetunes += 1
        s.meets_target = _final(s) >= need - 1e-9
        drop = goal.teacher_accuracy - s.accuracy_spliced
        if drop > max(goal.resolution, 0.001):  # too small a drop says nothing about recovery
            recovery = (s.accuracy_finetuned - s.accuracy_spliced) / drop
            selection.recovery = recovery
        last_hit = bool(s.meets_target)
        if s.meets_target:
            lo = k
        else:
            hi = k
    target = f"top-1 >= {need:.2%} (teacher - {goal.target_accuracy * 100:.2f} points)"
    if lo > 0:
        best = sets[lo - 1]
        selection.chosen, selection.met = best.blocks, True
        how = (
            f"{best.accuracy_finetuned:.2%} after a brief fine-tune"
            if best.accuracy_finetuned is not None and best.accuracy_finetuned >= need - 1e-9
            else f"{best.accuracy_spliced:.2%} before fine-tuning"
        )
        limit = []
        if lo == n:
            limit.append("every block is in")
        if hi <= n:
            limit.append(f"{hi} blocks missed ({_final(sets[hi - 1]):.2%})")
        if hi - lo > 1 and lo < n:
            limit.append(
                f"{selection.finetunes} of {max_tries} tries spent"
                if selection.finetunes >= max_tries
                else f"no set of {_span(lo + 1, min(hi, n + 1) - 1)} blocks is expected to meet it"
            )
        limit = "".join(f"; {part}" for part in limit)
        selection.why = f"met the target: {lo} best-ranked blocks reach {how}, {target}{limit}"
    elif sets:
        # judged sets: those fine-tuned, or every set where the spliced top-1 is the final one
        judged = [s for s in sets if s.accuracy_finetuned is not None] or sets
        best = max(judged, key=lambda s: (_final(s), s.n_blocks))
        selection.chosen, selection.met = best.blocks, False
        selection.why = (
            f"closest miss: no set tried met {target}; {best.n_blocks} best-ranked blocks came "
            f"closest at {_final(best):.2%}"
        )
    else:
        selection.chosen, selection.met = [], True
        selection.why = "no block saves anything: the student is the teacher"


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _final(s: Tried) -> float:
    """The best student a set gave: fine-tuning is kept only where it raised top-1."""
    if s.accuracy_finetuned is None:
        return s.accuracy_spliced
    return max(s.accuracy_finetuned, s.accuracy_spliced)


def _probe(
    sets: Sequence[Tried],
    goal: Goal,
    lo: int,
    hi: int,
    recovery: float,
    *,
    sure: bool,
    after_hit: bool,
) -> int | None:
    """The next prefix length to fine-tune, in (lo, hi), or None to stop.

    The model: fine-tuning wins back the share `recovery` of what splicing lost, so prefix k is
    expected at spliced_k + recovery * (teacher - spliced_k). The largest k expected to meet the
    target is tried. When none is and the search is not `sure` yet (no set has met the target,
    or the recovery is still the prior), it tries one block more than lo. When it is sure, it
    stops, unless the last try met the target: a share measured on a smaller set understates
    what a bigger one gets back (fine-tuning recovers a larger share of a larger drop: 0.6 of
    1.4 points and 0.75 of 19 on digits), so the largest set expected to fall short by at most
    EXPLORE_MARGIN of the tolerance is tried.
    """
    need = goal.needed_accuracy
    inside = range(lo + 1, hi)

    def expected(k: int) -> float:
        spliced = sets[k - 1].accuracy_spliced
        return spliced + recovery * (goal.teacher_accuracy - spliced)

    meeting = [k for k in inside if expected(k) >= need - 1e-9]
    if meeting:
        return max(meeting)
    if not sure:
        return inside[0] if inside else None
    if after_hit:
        near = [
            k for k in inside if expected(k) >= need - EXPLORE_MARGIN * goal.target_accuracy - 1e-9
        ]
        return max(near) if near else None
    return None


def diagnose(
    summary: Mapping[str, Any],
    *,
    n_val: int,
    block_accuracies: Sequence[float],
    goal: Goal,
    finetune_epochs: int,
) -> list[str]:
    """Why few blocks made the student, from the run's own facts, each with the change to try.

    Empty unless the student disappoints: under half of the targets in it, less than 1.5x fewer
    parameters, or (target mode) a missed target.
    """
    n_targets = int(summary.get("n_targets") or 0)
    n_in = len(summary.get("accepted") or [])
    compression = float(summary.get("compression_params") or 1.0)
    teacher = float(summary["teacher_accuracy"])
    before, after = summary.get("student_accuracy_before_finetune"), summary.get("student_accuracy")
    selection = summary.get("selection") or {}
    few = n_targets > 0 and (n_in < n_targets / 2 or compression < 1.5)
    missed = selection.get("met") is False
    final_short = (
        goal.mode == "target"
        and goal.target_params is None
        and after is not None
        and after < goal.needed_accuracy - 1e-9
    )
    if not (few or missed or final_short):
        return []
    out = []
    if few:
        out.append(
            f"{n_in} of {n_targets} blocks in the student ({compression:.2f}x fewer parameters)"
        )
    if teacher < 0.95:
        out.append(
            f"the teacher's top-1 is {teacher:.1%}: blocks that mimic a weak teacher splice in "
            "noisily; train the teacher longer (--teacher-epochs)"
        )
    losses = [teacher - a for a in block_accuracies if math.isfinite(a)]
    image = 1 / n_val if n_val else math.nan
    tolerance = goal.max_drop if goal.mode == "threshold" else goal.target_accuracy
    if goal.target_params is None and tolerance is not None and tolerance < 10 * image:
        near = sum(tolerance < loss <= tolerance + 2 * image for loss in losses)
        out.append(
            f"the validation split has {n_val} images: one image is {image * 100:.2f} points, "
            f"the {tolerance * 100:.2f}-point {'threshold' if goal.mode == 'threshold' else 'target'} "
            f"{tolerance / image:.1f} images"
            + (
                f"; {near} block(s) alone missed it by at most 2 images"
                if near and goal.mode == "threshold"
                else f"; {near} block(s) alone cost more than it, by at most 2 images"
                if near
                else ""
            )
            + "; use more validation images (--n-val)"
        )
    median_loss = sorted(losses)[len(losses) // 2] if losses else math.nan
    if goal.mode == "threshold":
        recovered = None if before is None or after is None else after - before
        if recovered is not None and goal.max_drop is not None and recovered > goal.max_drop:
            out.append(
                f"fine-tuning recovered {recovered * 100:.1f} points ({before:.1%} -> {after:.1%}), "
                f"more than the {goal.max_drop * 100:.1f}-point threshold each block must pass "
                "alone; try --acceptance target"
            )
        elif goal.max_drop is not None and median_loss > goal.max_drop:
            out.append(
                f"a block alone costs a median {median_loss * 100:.1f} points against a "
                f"{goal.max_drop * 100:.1f}-point threshold; train the blocks longer (--epochs) "
                "or try --acceptance target"
            )
        return out
    ranked = selection.get("ranked") or []
    everything = bool(ranked) and n_in >= len(ranked)
    if few and everything:
        out.append(
            f"every block that saves {goal.rank_by} is in: this teacher has little to gain from "
            "blocks of this kind (a wider teacher, or --block a if another is used)"
        )
    elif goal.target_params is not None:
        if missed:
            out.append(
                f"every block together gives {compression:.2f}x, short of the "
                f"{goal.target_params:g}x target; lower --target-params"
            )
    elif missed:
        tuned = [s["accuracy_finetuned"] for s in selection.get("sets") or []]
        tuned = [a for a in tuned if a is not None]
        reached = f" (the best set tried reached {max(tuned):.2%})" if tuned else ""
        out.append(
            f"no set met the target top-1 of {goal.needed_accuracy:.2%}{reached}: loosen "
            "--target-accuracy, fine-tune longer (--finetune-epochs) or train the blocks longer "
            "(--epochs)"
        )
    elif few:
        recovery = selection.get("recovery")
        out.append(
            f"the {goal.target_accuracy * 100:.2f}-point target is tight for these blocks "
            f"(a block alone costs a median {median_loss * 100:.1f} points"
            + (
                f"; fine-tuning won back {recovery:.0%} of a set's drop"
                if recovery is not None and recovery > 0
                else ""
            )
            + "); loosen --target-accuracy or train the blocks longer (--epochs)"
            + ("" if finetune_epochs else ", or fine-tune (--finetune-epochs)")
        )
    if goal.target_params is None:
        hurt = [
            (s["n_blocks"], s["accuracy_spliced"], s["accuracy_finetuned"])
            for s in selection.get("sets") or []
            if s.get("accuracy_finetuned") is not None
            and s["accuracy_finetuned"] < s.get("accuracy_spliced", -1.0)
        ]
        if summary.get("finetune_kept") is False:
            hurt.append((n_in, before, summary.get("student_accuracy_finetuned")))
        if hurt:
            k, spliced, tuned = hurt[0]
            out.append(
                f"fine-tuning lowered top-1 ({k} block(s): {spliced:.2%} -> {tuned:.2%}"
                + (
                    ", so the student kept its spliced weights"
                    if summary.get("finetune_kept") is False
                    else ""
                )
                + "): it costs more than it wins back this close to the teacher; try a lower "
                "--finetune-lr, or --no-augment"
            )
    if final_short and not missed:
        out.append(
            f"the chosen set met the target when selected, but the final {finetune_epochs}-epoch "
            f"fine-tune ended at {after:.2%} (target {goal.needed_accuracy:.2%}): try a lower "
            "--finetune-lr or --finetune-epochs 1 (the length of the selection's brief fine-tunes)"
        )
    return out
