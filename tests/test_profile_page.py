"""The profile page: a real profile (stand-in sensors at the OS boundary) drawn, tabled and indexed;
`greenkd report` on profile directories, `greenkd profile --report`, and bad input."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import pandas as pd
import pytest
from profile_page_fixtures import (
    FOREIGN_PID,
    GPU0_BUSY_W,
    GPU1_W,
    PACKAGE_BUSY_W,
    make_profile,
)
from profiler_fakes import FakeNvml, fuse_unavailable_reason
from run_fixtures import paper_table3_specs, write_sweep

import profilers
from greenkd.analysis.profile import (
    find_profiles,
    load_profile,
    mark_spans,
    read_marks,
    span_energy,
)
from greenkd.errors import GreenkdError
from greenkd.report.profile import build_profile_page, write_reports_and_pages
from greenkd.report.profile.tables import energy_text

HAS_MSR = fuse_unavailable_reason() is None


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory):
    """One real profile for the module: 0.3 s idle, then warmup, a busy epoch with a checkpoint."""
    root = tmp_path_factory.mktemp("profile")
    return make_profile(root / "train", root / "sensors")


@pytest.fixture(scope="module")
def page(profile_dir):
    return build_profile_page(load_profile(profile_dir))


def _text(page_html: str) -> str:
    without_scripts = re.sub(r"<script.*?</script>", " ", page_html, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", without_scripts)).split())


def _trace(fig, name):
    (trace,) = [t for t in fig.data if t.name == name]
    return trace


def _figure(page, title_start):
    (fig,) = [f for f in page.figures if f.layout.title.text.startswith(title_start)]
    return fig


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenkd", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


# -- the page of a real profile ------------------------------------------------


def test_every_figure_of_a_real_profile_has_data(page):
    titles = [f.layout.title.text.split(" (")[0] for f in page.figures]
    assert titles == [
        "Power per domain",
        "Utilisation",
        "Cumulative energy per domain",
        "GPU clocks, temperature and memory",
    ]
    for fig in page.figures:
        assert fig.data, fig.layout.title.text
        for trace in fig.data:
            y = [v for v in trace.y if v is not None and math.isfinite(v)]
            assert len(y) >= 2, (fig.layout.title.text, trace.name)
    assert page.html.count('class="plotly-graph-div"') == len(page.figures)
    assert page.html.count("plotly.js v") == 1  # inlined once
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", page.html)


def test_power_over_time_shows_each_gpu_at_its_power_and_its_idle_line(page):
    power = _figure(page, "Power per domain")
    assert max(_trace(power, "gpu0").y) == pytest.approx(GPU0_BUSY_W)
    assert set(_trace(power, "gpu1").y) == {GPU1_W}
    idle = _trace(power, "gpu1 idle")  # the baseline's idle power, dotted
    assert idle.line.dash == "dot" and idle.y[0] == pytest.approx(GPU1_W, rel=0.01)
    if HAS_MSR:
        # the busy epoch's samples: their median, as one sample can stall on a loaded machine
        # (the timestamp of a read that waited is off by the wait, and its neighbour's too)
        epoch = page.spans[page.spans["label"] == "epoch"].iloc[0]
        zero = page.profile.summary["idle"]["end_ts"]
        package = _trace(power, "package0")
        busy = [y for x, y in zip(package.x, package.y, strict=True)
                if epoch["start_ts"] - zero + 0.1 < x <= epoch["end_ts"] - zero]  # fmt: skip
        assert len(busy) >= 5 and statistics.median(busy) == pytest.approx(PACKAGE_BUSY_W, rel=0.15)
        assert "core0" not in {t.name for t in power.data}  # per-core lines are left out
    util = _figure(page, "Utilisation")
    assert max(_trace(util, "gpu0").y) == 97
    assert {"CPU (all)", "cpu0", "cpu1"} <= {t.name for t in util.data}


def test_cumulative_energy_ends_at_each_domains_energy_and_the_node_total(page):
    summary = page.profile.summary
    energy = _figure(page, "Cumulative energy per domain")
    for d in summary["domains"]:
        if re.fullmatch(r"core\d+", d["device"]):
            continue
        assert _trace(energy, d["device"]).y[-1] == pytest.approx(d["energy_j"], rel=1e-6)
    assert _trace(energy, "node total").y[-1] == pytest.approx(
        summary["total"]["energy_j"], rel=1e-3
    )


def test_idle_baseline_and_marks_are_drawn_on_every_figure(page):
    idle = page.profile.summary["idle"]
    for fig in page.figures:
        rects = [s for s in fig.layout.shapes if s.type == "rect"]
        lines = [s for s in fig.layout.shapes if s.type == "line"]
        # the idle baseline, then the two intervals (warmup, epoch); the checkpoint is a line
        assert len(rects) == 3 and len(lines) == 1, fig.layout.title.text
        assert rects[0].x0 == pytest.approx(idle["start_ts"] - idle["end_ts"], abs=1e-6)
        assert rects[0].x1 == pytest.approx(0.0, abs=0.06)
        labels = {a.text for a in fig.layout.annotations}
        assert {"idle baseline", "warmup", "epoch", "checkpoint"} <= labels
    assert list(page.spans["label"]) == ["warmup", "epoch", "checkpoint"]
    assert page.spans["end_ts"].isna().tolist() == [False, False, True]


def test_energy_table_names_each_domains_source_and_the_node_total(page):
    text = _text(page.html.split("id='energy'", 1)[1].split("</section>", 1)[0])
    total = page.profile.summary["total"]
    parts = " + ".join(total["domains"])
    assert f"Node total: {energy_text(total['energy_j'])}" in text
    assert parts.startswith("msr:package0" if HAS_MSR else "nvml:gpu0") and f"= {parts}." in text
    gpu0 = text.split("nvml:gpu0", 1)[1]
    assert gpu0.split()[0] == "counter"
    if HAS_MSR:
        cores = text.split("msr:cores", 1)[1].split("msr:package0")[0]
        assert " no " in f" {cores} "  # cores: shown, not in the node total


def test_an_interval_mark_gets_the_node_energy_between_its_times(page):
    spans = span_energy(page.profile, page.spans)
    epoch = spans[spans["label"] == "epoch"].iloc[0]
    busy_w = GPU0_BUSY_W + GPU1_W + (PACKAGE_BUSY_W if HAS_MSR else 0.0)
    assert epoch["avg_power_w"] == pytest.approx(busy_w, rel=0.1)
    assert epoch["energy_j"] == pytest.approx(epoch["avg_power_w"] * epoch["seconds"])
    assert math.isnan(spans[spans["label"] == "checkpoint"].iloc[0]["energy_j"])
    assert "path=ckpt-1" in _text(page.html)


def test_foreign_gpu_processes_are_warned_about(page):
    text = _text(page.html).split("Warnings", 2)[2]
    assert f"(pid {FOREIGN_PID}) ran on gpu1" in text
    assert "GPU processes not started by the work" in text


def test_header_says_status_and_headline_numbers(page):
    text = _text(page.html)
    assert "Profile train" in text and "A profiled Python block · status complete" in text
    assert "NODE ENERGY" in text.upper() and "AVERAGE NODE POWER" in text.upper()


def _attribution(page_html: str) -> str:
    return _text(page_html.split("id='attribution'", 1)[1].split("</section>", 1)[0])


def test_attribution_is_shown_where_the_summary_has_it(profile_dir, tmp_path, page):
    copy = shutil.copytree(profile_dir, tmp_path / "attribution")
    summary = json.loads((copy / "summary.json").read_text())
    summary["attribution"] = {
        "method": "Estimated by CPU time, not measured: "
        + "a rule long enough to be a paragraph. " * 2,
        "cpu_share": 0.25,
        "domains": [{"sensor": "nvml", "device": "gpu0", "attributed_energy_j": 123.5}],
        "attributed_total_j": 123.5,
        "notes": ["an estimate, not a measurement"],
    }
    (copy / "summary.json").write_text(json.dumps(summary))
    shown = build_profile_page(load_profile(copy)).html
    text = _attribution(shown)
    node = energy_text(summary["total"]["energy_j"])
    assert f"Attributed to the work: 123.5 J of the node's {node}" in text
    assert "Estimated by CPU time" in text and "cpu_share 25.0%" in text
    assert "attributed_energy_j" in text and "an estimate, not a measurement" in text
    assert "href='#attribution'" in shown
    # A summary without one (an older profiler) has no such section.
    del summary["attribution"]
    (copy / "summary.json").write_text(json.dumps(summary))
    absent = build_profile_page(load_profile(copy)).html
    assert "id='attribution'" not in absent and "href='#attribution'" not in absent


def test_a_profile_without_its_summary_is_drawn_from_the_samples(profile_dir, tmp_path):
    copy = shutil.copytree(profile_dir, tmp_path / "killed")
    (copy / "summary.json").unlink()
    page = build_profile_page(load_profile(copy))
    assert len(page.figures) == 4
    assert "the profiler did not finish" in _text(page.html)
    assert "Unfinished" in _text(page.html)


def test_a_cpu_only_profile_says_energy_was_not_measured_and_how_to_fix_it(tmp_path):
    out = tmp_path / "cpu-only"
    with profilers.Profiler(
        out=out,
        hz=20,
        msr_root=tmp_path / "no-msr",
        sysfs_root=tmp_path / "no-sys",
        nvml=FakeNvml(init_error=FakeNvml.NVML_ERROR_DRIVER_NOT_LOADED),
    ):
        time.sleep(0.3)
    page = build_profile_page(load_profile(out))
    assert [f.layout.title.text for f in page.figures] == ["Utilisation"]
    text = _text(page.html)
    assert "Energy not measured" in text and "not measured" in text
    assert "Not sampled: power, cumulative energy, GPU clocks and temperature" in text
    assert "modprobe msr" in text  # the msr sensor's fix


# -- marks ---------------------------------------------------------------------


def _spans(*labels: str) -> list[tuple[str, bool]]:
    marks = pd.DataFrame(
        {
            "ts": [float(i) for i in range(len(labels))],
            "label": labels,
            "fields": [{}] * len(labels),
        }
    )
    spans = mark_spans(marks)
    return [(r.label, not math.isnan(r.end_ts)) for r in spans.itertuples()]


def test_marks_pair_into_intervals_and_the_rest_are_points():
    assert _spans("epoch", "epoch_end") == [("epoch", True)]
    assert _spans("load_start", "load_stop", "eval_begin", "eval_end") == [
        ("load", True),
        ("eval", True),
    ]
    assert _spans("checkpoint", "orphan_end", "open") == [
        ("checkpoint", False),
        ("orphan_end", False),
        ("open", False),
    ]
    # the end closes the latest open one; the earlier stays a point
    assert _spans("task", "task", "task_end") == [("task", False), ("task", True)]


def test_marks_csv_fields_are_parsed_and_merged_over_an_interval(tmp_path):
    path = tmp_path / "marks.csv"
    path.write_text(
        'ts,label,fields\n1.0,epoch,"{""n"": 1}"\n2.0,epoch_end,"{""loss"": 0.5}"\n3.0,x,oops\n'
    )
    marks = read_marks(path, [])
    spans = mark_spans(marks)
    assert spans.iloc[0]["fields"] == {"n": 1, "loss": 0.5}
    assert spans.iloc[1]["fields"] == {"fields": "oops"}


# -- greenkd report and greenkd profile --report ------------------------------


def test_report_on_a_profile_directory_writes_its_page_and_the_index(profile_dir, tmp_path):
    out = tmp_path / "reports"
    result = _cli("report", str(profile_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    page = out / "train" / "report.html"
    assert result.stdout.strip() == str(page)
    assert "plotly-graph-div" in page.read_text()
    index = (out / "index.html").read_text()
    assert "href='train/report.html'" in index and "Profiles" in index
    card = json.loads((out / "train" / "report.json").read_text())
    assert (card["kind"], card["status"], card["figures"]) == ("profile", "complete", 4)


def test_report_on_a_directory_of_two_profiles_writes_two_pages_and_an_index(profile_dir, tmp_path):
    holder = tmp_path / "profiles"
    shutil.copytree(profile_dir, holder / "a")
    shutil.copytree(profile_dir, holder / "b")
    (holder / "notes").mkdir()  # not a profile: ignored
    assert find_profiles(holder) == [holder / "a", holder / "b"]
    out = tmp_path / "reports"
    paths = write_reports_and_pages(holder, out)
    assert paths == [out / "a" / "report.html", out / "b" / "report.html"]
    index = (out / "index.html").read_text()
    assert "href='a/report.html'" in index and "href='b/report.html'" in index
    assert "<th>sweep</th>" not in index  # no sweep: no empty sweep table


def test_a_directory_of_a_sweep_and_a_profile_reports_both_in_one_index(profile_dir, tmp_path):
    results = tmp_path / "results"
    write_sweep(results, "vgg", paper_table3_specs("vgg16"))
    shutil.copytree(profile_dir, results / "train")
    out = tmp_path / "reports"
    paths = write_reports_and_pages(results, out)
    assert paths == [out / "train" / "report.html", out / "vgg" / "report.html"]
    index = (out / "index.html").read_text()
    assert "<th>sweep</th>" in index and "<h3>Profiles</h3>" in index
    assert index.index("href='vgg/report.html'") < index.index("href='train/report.html'")


@pytest.mark.parametrize("make", ["empty_dir", "a_file", "missing"])
def test_report_bad_input_is_one_line_and_exit_code_2(tmp_path, make):
    target = tmp_path / "target"
    if make == "empty_dir":
        target.mkdir()
    elif make == "a_file":
        target.write_text("ts,sensor\n")
    result = _cli("report", str(target), "--out", str(tmp_path / "reports"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("greenkd: error: ")
    assert "profile" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "reports").exists()
    with pytest.raises(GreenkdError):
        write_reports_and_pages(target, tmp_path / "reports")


NO_SENSORS = {"GREENKD_MSR_ROOT": "/nonexistent/msr", "GREENKD_SYSFS_ROOT": "/nonexistent/sys"}


def test_profile_with_report_writes_the_page_and_keeps_the_commands_exit_code(tmp_path):
    out = tmp_path / "prof"
    result = _cli(
        "profile",
        "--hz",
        "10",
        "--report",
        "--out",
        str(out),
        "--",
        sys.executable,
        "-c",
        "import time, sys; time.sleep(0.4); sys.exit(3)",
        env=NO_SENSORS,
    )
    assert result.returncode == 3, result.stderr
    assert f"greenkd profile: page -> {out / 'report.html'}" in result.stderr
    text = _text((out / "report.html").read_text())
    assert "exit code 3 · status partial" in text
    assert "Partial: the command exited with code 3" in text


def test_profile_loads_pandas_and_plotly_only_with_report(tmp_path):
    code = (
        "import sys\n"
        "from greenkd.cli import main\n"
        "sys.argv = ['greenkd', 'profile', '--hz', '10', '-q', *sys.argv[1:], '--', 'true']\n"
        "try:\n    main()\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('pandas', 'plotly', 'typer') if m in sys.modules))\n"
    )
    loaded = {}
    for flags in ([], ["--report"]):
        run = subprocess.run(
            [sys.executable, "-c", code, "--out", str(tmp_path / str(len(flags))), *flags],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **NO_SENSORS},
        )
        assert run.returncode == 0, run.stderr
        loaded[bool(flags)] = run.stdout.strip()
    assert loaded[False] == "[]"
    assert loaded[True] == "['pandas', 'plotly']"
    assert (tmp_path / "1" / "report.html").is_file() and not (
        tmp_path / "0" / "report.html"
    ).exists()
