"""Emulated targets described in sim/*.yaml: each loads, agrees with its linker script and board, and builds
a firmware that answers on QEMU; `tinyexit sim --jobs N` gives the same per-sample results as one job."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from tinyexit import boards, sim_targets
from tinyexit.errors import TinyexitError
from tinyexit.paths import EXAMPLE_MODEL, FIRMWARE_DIR, SIM_DIR

needs_qemu = pytest.mark.skipif(not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-g++")),
                                reason="QEMU or the Arm toolchain missing (./setup.sh)")


def _linker_memory(script: str) -> dict:
    """{region: (origin, length)} from a GNU ld MEMORY block (lengths like 4M / 512K)."""
    units = {"": 1, "K": 1024, "M": 1024 * 1024}
    found = re.findall(r"(\w+)\s*\([rwx]+\)\s*:\s*ORIGIN\s*=\s*(0x[0-9a-fA-F]+)\s*,\s*LENGTH\s*=\s*(\d+)([KM]?)",
                       (FIRMWARE_DIR / script).read_text())
    return {name.lower(): (int(origin, 16), int(size) * units[unit]) for name, origin, size, unit in found}


def test_the_three_emulated_targets_are_described():
    assert {"qemu-m4", "qemu-m7", "qemu-m55"} <= set(sim_targets.names())


@pytest.mark.parametrize("name", sim_targets.names())
def test_each_file_agrees_with_its_linker_script_and_board(name):
    target = sim_targets.load(name)
    assert _linker_memory(target.linker_script) == {region: (r["origin"], r["length"])
                                                    for region, r in target.memory.items()}
    assert target.instructions_per_tick == 1e9 / target.sysclk_hz
    if target.stands_in_for:  # the board names this target as its QEMU stand-in and is the one priced by default
        assert boards.load(target.stands_in_for).qemu == name
        assert boards.for_target(name).name == target.stands_in_for
    else:
        assert boards.for_target(name) is None


def test_adding_an_emulated_target_is_adding_a_file(tmp_path, monkeypatch):
    text = (SIM_DIR / "qemu-m4.yaml").read_text().replace("name: qemu-m4", "name: qemu-m4-copy")
    (tmp_path / "qemu-m4-copy.yaml").write_text(text)
    (tmp_path / "bad-clock.yaml").write_text(text.replace("name: qemu-m4-copy", "name: bad-clock")
                                             .replace("instructions_per_tick: 40", "instructions_per_tick: 41"))
    monkeypatch.setattr(sim_targets, "SIM_DIR", tmp_path)
    sim_targets.load.cache_clear()
    try:
        spec = sim_targets.load("qemu-m4-copy").build_spec()
        assert spec["machine"] == "mps2-an386" and "-DTX_SYSCLK_HZ=25000000" in spec["flags"]
        with pytest.raises(TinyexitError, match="instructions_per_tick 41 is not 1e9 / sysclk_hz = 40"):
            sim_targets.load("bad-clock")
        with pytest.raises(TinyexitError, match="unknown emulated target 'qemu-m9'"):
            sim_targets.load("qemu-m9")
    finally:
        sim_targets.load.cache_clear()


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The shipped example model built once per emulated target (firmware_build reads sim/*.yaml)."""
    from tinyexit.firmware_build import build

    return {name: build(EXAMPLE_MODEL, name, tmp_path_factory.mktemp(name)) for name in sim_targets.names()}


@needs_qemu
@pytest.mark.parametrize("name", sim_targets.names())
def test_each_target_builds_a_firmware_that_answers_on_qemu(name, builds):
    from tinyexit.harness import firmware

    with firmware(name, builds[name].binary) as dev:
        info = dev.info()
    assert (info["port"], info["cycle_unit"], info["task"]) == (sim_targets.load(name).port_name, "instructions", "har")


@needs_qemu
def test_sim_jobs_2_gives_the_results_of_one_job(tmp_path):
    """Two QEMU instances over contiguous halves: exits, classes, instruction counts, outputs and the summary
    are those of one instance, in input order."""
    import json

    from tests.conftest import run_cli

    rng = np.random.default_rng(18)
    walks = np.cumsum(rng.integers(-10, 11, (24, 128, 1, 9)), axis=1)  # sensor-like drifts: some take the last exit
    np.save(tmp_path / "x.npy", walks.clip(-128, 127).astype(np.int8))
    got = {}
    for jobs in (1, 2):
        proc = run_cli("sim", str(EXAMPLE_MODEL), "--target", "qemu-m4", "--inputs", str(tmp_path / "x.npy"),
                       "--out", str(tmp_path / f"r{jobs}.npz"), "--json", str(tmp_path / f"s{jobs}.json"),
                       "--build-dir", str(tmp_path / "build"), "--jobs", str(jobs))
        assert proc.returncode == 0, proc.stderr
        got[jobs] = (dict(np.load(tmp_path / f"r{jobs}.npz")), json.loads((tmp_path / f"s{jobs}.json").read_text()))
    (one, summary_one), (two, summary_two) = got[1], got[2]
    assert sorted(one) == sorted(two) == ["exit", "instructions", "output", "pred"]
    assert all(np.array_equal(one[k], two[k]) for k in one)
    assert len({row.tobytes() for row in one["output"]}) == 24  # every sample's output its own: order is checked
    assert summary_one == summary_two


def test_sim_jobs_must_be_a_positive_number():
    from tests.conftest import assert_one_line_error, run_cli

    assert_one_line_error(run_cli("sim", str(EXAMPLE_MODEL), "--inputs", "x.npy", "--jobs", "0"), "--jobs")
