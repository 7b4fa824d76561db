"""One GPU identity: CUDA_VISIBLE_DEVICES resolved through NVML (a stand-in: no GPU here)."""

from __future__ import annotations

import json
import sys

import pytest
import typer
from profiler_fakes import FakeGpu, FakeNvml
from typer.testing import CliRunner

from greenkd.errors import GreenkdError
from profilers import cli as profilers_cli
from profilers.gpus import (
    GpuIdentity,
    default_used_gpus,
    resolve_visible,
    visible_env,
)

MIG_A = "MIG-3c2b1a09-8f7e-5d6c-b4a3-928170615243"
MIG_B = "MIG-9a8b7c6d-5e4f-5a3b-8c2d-1e0f9a8b7c6d"


def _node(**options) -> FakeNvml:
    """Four GPUs; the last one in MIG mode with two MIG devices."""
    return FakeNvml(
        [
            FakeGpu(uuid="GPU-8f2c1e3a-0000-4000-8000-000000000000"),
            FakeGpu(uuid="GPU-1b7d9c44-1111-4000-8000-000000000001"),
            FakeGpu(uuid="GPU-1b7e0000-2222-4000-8000-000000000002"),
            FakeGpu(
                uuid="GPU-c0ffee00-3333-4000-8000-000000000003",
                mig=True,
                mig_devices=[MIG_A, MIG_B],
            ),
        ],
        **options,
    )


def _resolve(value, nvml=None, **env):
    if value is not None:
        env["CUDA_VISIBLE_DEVICES"] = value
    return resolve_visible(env, nvml or _node())


def test_indices_are_nvml_indices_in_pci_bus_order():
    nvml = _node()
    visible = _resolve("2,3", nvml)
    assert visible.nvml_indices == [2, 3]
    two, three = visible.gpus
    assert two == GpuIdentity(
        2, "GPU-1b7e0000-2222-4000-8000-000000000002", "00000000:57:00.0", "NVIDIA Fake A100", False
    )
    assert three.mig and three.mig_uuid is None
    assert visible.by_index and visible.order_assumed and visible.cuda_device_order is None
    assert not _resolve("2,3", CUDA_DEVICE_ORDER="PCI_BUS_ID").order_assumed
    assert nvml.inits == nvml.shutdowns == 1


def test_an_index_is_a_position_in_pci_bus_order_not_in_nvml_order():
    nvml = _node()
    # NVML enumerates these four in another order than their PCI bus ids
    for gpu, bus in zip(nvml.gpus, ("B7", "17", "97", "57"), strict=True):
        gpu.pci_bus_id = f"00000000:{bus}:00.0"
    # CUDA (PCI_BUS_ID) counts 17 (gpu1), 57 (gpu3), 97 (gpu2), B7 (gpu0)
    visible = _resolve("0,2", nvml, CUDA_DEVICE_ORDER="PCI_BUS_ID")
    assert visible.nvml_indices == [1, 2]
    assert [g.label for g in visible.gpus] == ["gpu1", "gpu2"]
    assert _resolve("3", nvml).nvml_indices == [0]


def test_order_warning_only_where_cuda_could_order_differently():
    # Same model everywhere: CUDA's fastest-first order ties and falls back to PCI order.
    assert _resolve("1,0").order_warning() is None
    nvml = _node()
    nvml.gpus[0].name = "NVIDIA Fake H100"
    warning = _resolve("1,0", nvml).order_warning()
    assert warning.startswith("CUDA_VISIBLE_DEVICES=1,0 was read in PCI bus order")
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in warning
    assert _resolve("1,0", _node(), CUDA_DEVICE_ORDER="PCI_BUS_ID").order_warning() is None


def test_uuids_name_gpus_in_the_order_given_and_a_unique_prefix_is_enough():
    visible = _resolve("GPU-c0ffee00-3333-4000-8000-000000000003,GPU-8f2c")
    assert visible.nvml_indices == [3, 0]
    assert not visible.by_index and not visible.order_assumed
    with pytest.raises(GreenkdError, match=r"'GPU-1b7' is the start of the UUIDs of gpu1, gpu2"):
        _resolve("GPU-1b7")


@pytest.mark.parametrize("mig_uuid_lookup", [True, False], ids=["nvml-lookup", "scan"])
def test_mig_uuid_resolves_to_its_parent_gpu(mig_uuid_lookup):
    (gpu,) = _resolve(MIG_B, _node(mig_uuid_lookup=mig_uuid_lookup)).gpus
    assert (gpu.nvml_index, gpu.label, gpu.mig, gpu.mig_uuid) == (3, "gpu3", True, MIG_B)
    assert gpu.uuid == "GPU-c0ffee00-3333-4000-8000-000000000003"
    assert visible_env(gpu) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": MIG_B}


def test_old_style_mig_name_resolves_to_its_parent_gpu():
    (gpu,) = _resolve("MIG-GPU-c0ffee00-3333-4000-8000-000000000003/1/0").gpus
    assert gpu.nvml_index == 3 and gpu.mig_uuid.endswith("/1/0")


@pytest.mark.parametrize(
    ("value", "indices"),
    [("-1", []), ("", []), (" ", []), ("0,-1,2", [0]), (None, [0, 1, 2, 3])],
    ids=["minus-one", "empty", "blank", "negative-ends-the-list", "unset"],
)
def test_no_gpu_some_gpus_or_every_gpu(value, indices):
    assert _resolve(value).nvml_indices == indices


def test_no_gpu_needs_no_nvml():
    broken = FakeNvml(init_error=FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    assert _resolve("-1", broken).gpus == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "GPU-deadbeef-0000-0000-0000-000000000000",
            r"no GPU here has the UUID 'GPU-deadbeef-0000-0000-0000-000000000000'; this node has "
            r"gpu0 GPU-8f2c1e3a-0000-4000-8000-000000000000 \(NVIDIA Fake A100\), gpu1 ",
        ),
        ("MIG-00000000-0000-0000-0000-000000000000", "no GPU here has the UUID 'MIG-0000"),
        ("4", r"names GPU 4, but this node has gpu0 .*gpu3"),
        ("0,first", "'first' is not a GPU index, a GPU UUID"),
        ("1,GPU-1b7d9c44", "names gpu1 twice"),
    ],
    ids=["unknown-uuid", "unknown-mig", "index-past-the-end", "junk", "twice"],
)
def test_entries_naming_no_gpu_here_are_user_errors(value, message):
    with pytest.raises(GreenkdError, match=message):
        _resolve(value)


def test_index_counts_only_the_gpus_this_process_may_open():
    # CUDA numbers the GPUs it can open; a GPU hidden by cgroups takes no index.
    nvml = _node()
    nvml.gpus[1].errors["nvmlDeviceGetHandleByIndex"] = FakeNvml.NVML_ERROR_NO_PERMISSION
    visible = _resolve("1", nvml)
    assert visible.nvml_indices == [2]
    assert visible.unreadable == ("gpu1: Insufficient Permissions (NVML_ERROR_NO_PERMISSION)",)


def test_visible_env_names_the_gpu_by_uuid_and_refuses_a_whole_mig_gpu():
    zero, three = _resolve("0,3").gpus
    assert visible_env(zero) == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "GPU-8f2c1e3a-0000-4000-8000-000000000000",
    }
    with pytest.raises(GreenkdError, match=r"gpu3 .* is in MIG mode: .* name one of its MIG"):
        visible_env(three)


# -- `greenkd profile --gpus` default -------------------------------------------------


@pytest.mark.parametrize(
    ("env", "indices"),
    [
        ({"CUDA_VISIBLE_DEVICES": "2,3"}, [2, 3]),
        ({"CUDA_VISIBLE_DEVICES": f"{MIG_A},GPU-1b7d"}, [3, 1]),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, []),
        ({}, None),
    ],
    ids=["indices", "uuids", "none", "unset"],
)
def test_default_used_gpus_follow_cuda_visible_devices(env, indices):
    used = default_used_gpus(env, _node())
    assert used.indices == indices and used.warnings == []


def test_default_used_gpus_without_nvml_is_every_gpu_of_none():
    broken = FakeNvml(init_error=FakeNvml.NVML_ERROR_DRIVER_NOT_LOADED)
    assert default_used_gpus({"CUDA_VISIBLE_DEVICES": "0"}, broken).indices is None


def _profile_cli(tmp_path, monkeypatch, nvml, *options):
    """`greenkd profile` as the CLI runs it, with the fake standing in for the pynvml module."""
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setenv("GREENKD_MSR_ROOT", str(tmp_path / "no-msr"))
    monkeypatch.setenv("GREENKD_SYSFS_ROOT", str(tmp_path / "no-sys"))
    app = typer.Typer()
    profilers_cli.register(app)
    out = tmp_path / "run"
    command = [sys.executable, "-c", "pass"]
    result = CliRunner().invoke(
        app, ["profile", "--out", str(out), "--hz", "20", *options, "--", *command]
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "summary.json").read_text()), result


def test_profile_without_gpus_uses_what_cuda_visible_devices_names(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1b7d9c44-1111-4000-8000-000000000001,2")
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    summary, result = _profile_cli(tmp_path, monkeypatch, _node())
    assert summary["gpus"]["selected"] == [1, 2]
    assert "gpus    used gpu1, gpu2: " in result.output
    # Every GPU of the node is still measured, idle ones too, labelled by NVML index.
    used = {d["device"]: d["used"] for d in summary["domains"] if d["sensor"] == "nvml"}
    assert used == {"gpu0": False, "gpu1": True, "gpu2": True, "gpu3": False}


def test_profile_gpus_flag_wins_and_an_assumed_order_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    nvml = _node()
    nvml.gpus[1].name = "NVIDIA Fake H100"
    summary, result = _profile_cli(tmp_path, monkeypatch, nvml)
    assert summary["gpus"]["selected"] == [1, 0]
    (warning,) = [w for w in summary["warnings"] if "CUDA_DEVICE_ORDER" in w]
    assert "warning CUDA_VISIBLE_DEVICES=1,0 was read in PCI bus order" in result.output
    assert warning.startswith("CUDA_VISIBLE_DEVICES=1,0")
    summary, _ = _profile_cli(tmp_path, monkeypatch, _node(), "--gpus", "3")
    assert summary["gpus"]["selected"] == [3]
