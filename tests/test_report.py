"""The HTML report: one file per sweep and an index, the paper's tables in it, the CLI's errors."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
from run_fixtures import RunSpec, demo_specs, paper_table3_specs, write_run, write_sweep

from greenkd.analysis import load_sweep
from greenkd.errors import GreenkdError
from greenkd.report import build_report, write_report, write_reports
from profilers import Profiler


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenkd", "report", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _text(page: str) -> str:
    """The page's text without scripts and tags."""
    without_scripts = re.sub(r"<script.*?</script>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", without_scripts))


def test_each_sweep_gets_a_report_and_the_index_lists_them(tmp_path):
    results = tmp_path / "results"
    write_sweep(results, "vgg", paper_table3_specs("vgg16"))
    write_sweep(results, "resnet", paper_table3_specs("resnet50"))
    out = tmp_path / "reports"
    paths = write_reports(results, out)
    assert paths == [out / "resnet" / "report.html", out / "vgg" / "report.html"]
    index = (out / "index.html").read_text()
    assert "href='resnet/report.html'" in index and "href='vgg/report.html'" in index
    card = json.loads((out / "vgg" / "report.json").read_text())
    assert (card["runs"], card["usable"], card["devices"]) == (4, 4, [1, 2, 3, 4])
    # Written atomically: nothing half-written is left beside the reports.
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_report_shows_the_papers_table9_greenup_and_table3_speedup(tmp_path):
    sweep = write_sweep(tmp_path, "resnet", paper_table3_specs("resnet50"))
    text = _text(write_report(sweep, tmp_path / "reports").read_text())
    energy_table = text.split("Energy and greenup (Table 9)", 1)[1].split("By domain", 1)[0]
    for kj, greenup in (("977.39", "1.29"), ("1,067.82", "1.18"), ("1,263.43", "1.00")):
        assert re.search(rf"{re.escape(kj)}\s.*?{greenup}", energy_table), (kj, greenup)
    assert re.search(r"2,749\.8\s.*?3\.53\s+0\.88", text)


def test_plotly_is_inlined_once_and_nothing_is_loaded_from_elsewhere(tmp_path):
    report = build_report_for(tmp_path, demo_specs())
    page = report.html
    assert page.count("plotly.js v") == 1  # the library's banner, inlined once
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", page)
    assert page.count('class="plotly-graph-div"') == len(report.figures)


def build_report_for(tmp_path, specs):
    return build_report(load_sweep(write_sweep(tmp_path, "sweep", specs)))


def test_report_has_the_paper_figures_for_a_full_sweep(tmp_path):
    report = build_report_for(tmp_path, demo_specs())
    titles = [fig.layout.title.text for fig in report.figures]
    assert titles[:2] == ["Speedup vs devices", "Efficiency vs devices"]
    assert "Energy savings and power cost of parallelism" in titles
    groups = [
        "round robin · autotune",
        "round robin · 4-intra1",
        "bin packing · autotune",
        "bin packing · 4-intra1",
    ]
    for group in groups:
        assert f"Layer runtimes · {group}" in titles
        assert f"Task allocation · {group} · 4 GPUs" in titles
    # speedup figure: the ideal line plus one line per group, coloured by scheduler
    speedup = report.figures[0]
    colours = {t.name: t.line.color for t in speedup.data}
    assert (
        colours["round robin · autotune"]
        == colours["round robin · 4-intra1"]
        != colours["bin packing · autotune"]
    )
    assert list(speedup.data[0].y) == [1, 2, 3, 4]  # ideal
    gantt = next(
        f
        for f in report.figures
        if f.layout.title.text == "Task allocation · round robin · 4-intra1 · 4 GPUs"
    )
    bars = gantt.data[0]
    assert len(bars.x) == 13 and sorted(set(bars.y)) == ["gpu0", "gpu1", "gpu2", "gpu3"]
    # round robin: gpu0 runs tasks 0, 4, 8, 12 back to back
    assert [b for b, d in zip(bars.base, bars.y, strict=True) if d == "gpu0"] == [0, 34, 54, 71]


def test_repeats_draw_whiskers_from_the_worst_to_the_best_repeat(tmp_path):
    specs = [
        RunSpec(name=f"n{n}-r{i}", gpus=n, repeat=i, total_s=t, task_seconds=[10.0, 10.0])
        for n, times in ((1, [100.0, 120.0]), (2, [50.0, 60.0]))
        for i, t in enumerate(times)
    ]
    speedup = build_report_for(tmp_path, specs).figures[0]
    line = next(t for t in speedup.data if t.name != "ideal")
    # median speedup 110 / 55 = 2; best 120 / 50 = 2.4, worst 100 / 60 = 1.667
    assert list(line.y) == pytest.approx([1.0, 2.0])
    assert list(line.error_y.array) == pytest.approx([120 / 100 - 1, 2.4 - 2.0])
    assert list(line.error_y.arrayminus) == pytest.approx([1 - 100 / 120, 2.0 - 100 / 60])


def test_report_names_left_out_runs_and_missing_sensors(tmp_path):
    specs = [
        RunSpec(
            name=f"cpu{n}",
            gpus=n,
            sched="rr",
            device_kind="cpu",
            energy_sensors=False,
            task_seconds=[6.0, 4.0, 3.0],
        )
        for n in (1, 2)
    ]
    specs.append(
        RunSpec(
            name="cpu3",
            gpus=3,
            sched="rr",
            device_kind="cpu",
            status="failed",
            error="worker 2 exited with code 137",
            energy_sensors=False,
        )
    )
    report = build_report_for(tmp_path, specs)
    text = _text(report.html)
    assert "failed: worker 2 exited with code 137" in text
    assert "modprobe msr" in text and "NVML: no NVIDIA driver" in text
    assert "No greenup: no energy sensor" in text
    titles = [fig.layout.title.text for fig in report.figures]
    assert "Task allocation · round robin · autotune · 2 CPU workers" in titles
    timeline = next(f for f in report.figures if f.layout.title.text.endswith("run cpu2"))
    assert {t.name for t in timeline.data} == {
        "CPU (all)",
        "cpuset0",
        "cpuset1",
    }  # utilisation only


def test_report_of_a_sweep_where_every_run_failed_explains_itself(tmp_path):
    specs = [
        RunSpec(name="a", status="failed", error="no GPU visible"),
        RunSpec(name="b", gpus=2, status="killed"),
    ]
    report = build_report_for(tmp_path, specs)
    assert report.figures == []
    text = _text(report.html)
    assert "No speedup: no usable run." in text and "No usable run." in text
    assert "failed: no GPU visible" in text and "partial: no summary.json" in text


def test_cli_writes_the_report_and_prints_its_path(tmp_path):
    sweep = write_sweep(tmp_path / "results", "vgg", paper_table3_specs("vgg16"))
    result = _cli(str(sweep), "--out", str(tmp_path / "reports"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "reports" / "vgg" / "report.html")
    assert (tmp_path / "reports" / "index.html").is_file()


@pytest.mark.parametrize("make", ["missing", "empty_dir", "sweep_without_runs", "one_run_dir"])
def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path, make):
    target = tmp_path / "results"
    if make != "missing":
        target.mkdir()
    if make == "sweep_without_runs":
        (target / "sweep.json").write_text(json.dumps({"name": "x", "runs": []}))
    if make == "one_run_dir":
        target = write_sweep(tmp_path / "results", "s", [RunSpec(name="r")]) / "r"
    result = _cli(str(target), "--out", str(tmp_path / "reports"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("greenkd: error: ")
    assert "Traceback" not in result.stderr and not (tmp_path / "reports").exists()


def test_one_empty_sweep_among_several_is_listed_not_fatal(tmp_path):
    results = tmp_path / "results"
    write_sweep(results, "good", [RunSpec(name="a"), RunSpec(name="b", gpus=2)])
    (results / "empty").mkdir()
    (results / "empty" / "sweep.json").write_text(json.dumps({"name": "empty", "runs": []}))
    paths = write_reports(results, tmp_path / "reports")
    assert paths == [tmp_path / "reports" / "good" / "report.html"]
    assert "empty: " in (tmp_path / "reports" / "index.html").read_text()
    with pytest.raises(GreenkdError, match="holds no runs"):
        write_reports(results / "empty", tmp_path / "reports")


def _cpu_samples(samples_csv) -> int:
    """How many whole-CPU utilisation rows the profiler has flushed so far."""
    lines = samples_csv.read_text().splitlines() if samples_csv.exists() else []
    return sum(",procstat,cpu,utilization," in line for line in lines)


def test_report_reads_what_the_real_profiler_writes(tmp_path):
    """The profiler itself (procstat here; no msr or NVML on this machine) feeds a 2-run sweep."""
    sweep_dir = tmp_path / "results" / "real"
    first = sweep_dir / "cpu-n1"
    with Profiler(out=first, hz=5, summary_name="profile.json") as profiler:
        start = time.time()
        # Keep one core busy until the profiler has written ten whole-CPU samples: an event,
        # not a time window (a loaded 2-core machine once gave four samples in 2 s).
        while time.time() - start < 2.0 or _cpu_samples(profiler.samples_path) < 10:
            pass
        end = time.time()
    for n, name in ((1, "cpu-n1"), (2, "cpu-n2")):
        spec = RunSpec(
            name=name,
            gpus=n,
            sched="rr",
            device_kind="cpu",
            profiled=False,
            start_ts=start,
            setup_s=0.1,
            task_seconds=[0.6, 0.4, 0.3],
            assemble_s=0.1,
            finetune_s=0.2,
        )
        write_run(sweep_dir, spec)
        if n == 2:
            shutil.copy(first / "samples.csv", sweep_dir / name / "samples.csv")
            shutil.copy(first / "profile.json", sweep_dir / name / "profile.json")
    (sweep_dir / "sweep.json").write_text(
        json.dumps(
            {
                "name": "real",
                "created_ts": start,
                "spec": {},
                "runs": [
                    {"run": "cpu-n1", "status": "complete", "error": None},
                    {"run": "cpu-n2", "status": "complete", "error": None},
                ],
            }
        )
    )
    samples = pd.read_csv(first / "samples.csv")
    assert samples["ts"].min() <= start + 0.3 and samples["ts"].max() >= end - 0.3

    sweep = load_sweep(sweep_dir)
    report = build_report(sweep)
    runs = {r.name: r for r in sweep.runs}
    assert runs["cpu-n1"].usable and runs["cpu-n2"].usable
    text = _text(report.html)
    assert (
        "energy not measured (no energy sensor: msr:" in text
        and "No greenup: no energy sensor" in text
    )
    missing = json.loads((first / "profile.json").read_text())["missing"]
    assert missing and all(html.unescape(m["reason"]) in text for m in missing)
    timeline = next(f for f in report.figures if f.layout.title.text.endswith("run cpu-n2"))
    cpu = next(t for t in timeline.data if t.name == "CPU (all)")
    assert len(cpu.y) >= 8 and max(cpu.y) > 30  # a busy core shows on a 2-core machine


def _section_text(page: str, sid: str) -> str:
    found = re.search(rf"<section id='{sid}'>(.*?)</section>", page, flags=re.S)
    assert found, sid
    return _text(found.group(1))


def test_a_reason_every_row_shares_is_stated_once_and_row_notes_keep_what_differs(tmp_path):
    """The default sweep's shape on a machine without energy sensors: six runs, one reason."""
    specs = [
        RunSpec(
            name=f"g{n}-{sched}-t{threads}",
            gpus=n,
            sched=sched,
            threads=threads,
            device_kind="cpu",
            energy_sensors=False,
            task_seconds=[6.0, 4.0, 3.0, 5.0],
        )
        for threads in ("autotune", "4")
        for n, sched in ((1, "rr"), (2, "rr"), (2, "binpack"))
    ]
    report = build_report(load_sweep(write_sweep(tmp_path, "default", specs)))
    reason = "no energy sensor: msr: no /dev/cpu/0/msr"
    scaling = _section_text(report.html, "scaling")
    assert scaling.count(reason) == 1
    assert f"In every row: energy not measured ({reason}" in scaling
    # what differs per row stays in its row: binpack's groups borrow rr's 1-device run
    assert scaling.count("the 1-device run shared by every scheduler") == 2
    assert _section_text(report.html, "energy").count(reason) == 1
    # the analysis table itself still says it in every row, for scripts
    assert report.scaling["note"].str.contains(reason, regex=False).all()


@pytest.mark.slow
def test_a_48_run_sweep_gives_a_report_under_8_mb_built_in_under_15_cpu_seconds(
    tmp_path, record_property
):
    """4 schedulers x 1, 2, 4 GPUs x 2 thread settings x 2 repeats, 13 tasks each, every run
    profiled at 1 Hz for 1.5-5 minutes (~12k sample rows per 1-GPU run): the file stays small
    (plotly.js, 4.8 MB, inlined once is most of it) and quick to build. Time is this process's
    CPU time, so a busy machine cannot make it fail; 2.2 s here on 2 cores (Intel Xeon)."""
    specs = [
        RunSpec(
            name=f"g{n}-{sched}-t{threads}-r{r}", gpus=n, sched=sched, threads=threads, repeat=r
        )
        for sched in ("rr", "binpack", "ws", "opt")
        for n in (1, 2, 4)
        for threads in ("autotune", "4")
        for r in (0, 1)
    ]
    sweep = write_sweep(tmp_path / "results", "big", specs)
    cpu = time.process_time()
    path = write_report(sweep, tmp_path / "reports")
    cpu = time.process_time() - cpu
    page = path.read_text()
    size_mb = len(page.encode()) / 1e6
    record_property("report_mb", round(size_mb, 2))
    record_property("report_cpu_s", round(cpu, 2))
    assert size_mb < 8.0, f"{size_mb:.2f} MB"
    assert cpu < 15.0, f"{cpu:.1f} s of CPU"
    assert page.count("plotly.js v") == 1
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", page)
    runs = _section_text(page, "runs")
    assert all(s.name in runs for s in specs)
