"""Boards and PlatformIO: board descriptions and the energy proxy, the board ports (compile and link with
Debian's arm-none-eabi-gcc), offline `pio run` (qemu-m4 bit-exact with TFLite Micro, host), `tinyexit flash`,
`tinyexit profile` over a socket, and energy in `tinyexit sim`."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tinyexit import boards
from tinyexit.errors import TinyexitError
from tinyexit.firmware_build import BOARD_TARGETS, TARGETS, build
from tinyexit.paths import PROJECT_ROOT

PIO = shutil.which("pio")


@pytest.fixture()
def pio_installed():
    # ./setup.sh installs PlatformIO: its absence is a failed set-up, not a reason to skip
    assert PIO is not None, "PlatformIO not installed: run ./setup.sh"


needs_pio = pytest.mark.usefixtures("pio_installed")
CORTEX_M_BOARDS = [t for t in BOARD_TARGETS if TARGETS[t]["compiler"] == "arm-none-eabi-g++"]
ALL_ENVS = {"host", "qemu-m4", "qemu-m7", "qemu-m55", *BOARD_TARGETS}


@pytest.fixture(scope="module")
def kws_model(datasets) -> Path:
    return datasets / "models" / "mlperf_kws_ref_model_int8.tflite"


@pytest.fixture(scope="module")
def kws_inputs(datasets, tmp_path_factory):
    """The first 24 kws01 inputs and labels, also saved as .npy for the CLI."""
    with tarfile.open(datasets / "kws" / "mlperf_kws01.tar.xz") as tar:
        members = {m.name.rsplit("/", 1)[-1]: m for m in tar if m.isfile()}
        rows = [r for r in csv.reader(io.StringIO(tar.extractfile(members["y_labels.csv"]).read().decode())) if r][:24]
        x = np.stack([np.frombuffer(tar.extractfile(members[r[0]]).read(), np.int8).reshape(49, 10, 1) for r in rows])
    y = np.array([int(r[2]) for r in rows])
    out = tmp_path_factory.mktemp("kws_inputs")
    np.save(out / "x.npy", x)
    np.save(out / "y.npy", y)
    return x, y, out / "x.npy", out / "y.npy"


@pytest.fixture(scope="module")
def kws_reference(kws_model, kws_inputs):
    from tinyexit.reference import StageInterpreter

    run = StageInterpreter(kws_model.read_bytes())
    return np.stack([run(x[None])[0].reshape(-1) for x in kws_inputs[0]])


def pio_env(build_dir: Path, model: Path) -> dict:
    env = dict(os.environ, TINYEXIT_MODEL=str(model), PLATFORMIO_BUILD_DIR=str(build_dir),
               PLATFORMIO_DISABLE_UPGRADE_CHECK="true", PLATFORMIO_SETTING_ENABLE_TELEMETRY="No")
    # a dead proxy: no registry request can succeed, so a passing build proves it needed none
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", ALL_PROXY="http://127.0.0.1:9")
    return env


def pio_run(env_name: str, build_dir: Path, model: Path) -> Path:
    proc = subprocess.run([PIO, "run", "-d", str(PROJECT_ROOT), "-e", env_name], capture_output=True, text=True,
                          env=pio_env(build_dir, model), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return build_dir / env_name / ("firmware" if env_name == "host" else "firmware.elf")


# ---- board descriptions and energy ----

def test_every_board_loads_with_a_datasheet_power_figure():
    assert set(boards.names()) == {"nucleo-l4r5zi", "nucleo-h7a3zi-q", "nano33ble", "pico", "esp32s3"}
    for b in boards.all_boards():
        assert b.clock_hz > 1e6 and b.flash_bytes > 0 and b.ram_bytes > 0
        assert 0 < b.active_current_a < 0.5 and 1.5 < b.supply_v < 5 and b.power_source
        assert b.pio_env == b.name and b.name in TARGETS
    l4 = boards.load("nucleo-l4r5zi")
    assert (l4.core, l4.clock_hz, l4.qemu) == ("cortex-m4", 120_000_000, "qemu-m4")
    # 1.2 M cycles at 120 MHz = 10 ms at 13.2 mA x 3.3 V = 435.6 uJ
    assert l4.energy_uj(1_200_000) == pytest.approx(0.01 * 0.0132 * 3.3 * 1e6)
    assert boards.for_target("qemu-m4").name == "nucleo-l4r5zi"
    assert boards.for_target("qemu-m7").name == "nucleo-h7a3zi-q"
    assert boards.for_target("qemu-m55") is None


def test_unknown_board_names_the_known_ones():
    with pytest.raises(TinyexitError, match=r"unknown board 'uno' \(known: esp32s3, nano33ble, .*pico\)"):
        boards.load("uno")


# ---- board ports: compile and link with Debian's arm-none-eabi-gcc ----

def rp2040_boot2_crc(data: bytes) -> int:
    crc = 0xFFFFFFFF  # CRC-32/MPEG-2: polynomial 0x04C11DB7, not reflected, no final XOR
    for b in data:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


@pytest.mark.parametrize("target", CORTEX_M_BOARDS)
def test_cortex_m_board_port_compiles_and_links(target, kws_model, tmp_path):
    fw = build(kws_model, target, tmp_path)
    board = boards.load(target)
    sizes = subprocess.run(["arm-none-eabi-size", "-A", str(fw.binary)], capture_output=True, text=True, check=True)
    sections = {l.split()[0]: int(l.split()[1]) for l in sizes.stdout.splitlines()[2:] if len(l.split()) >= 3}
    flash = sections[".text"] + sections.get(".data", 0) + sections.get(".boot2", 0)
    ram = sections.get(".data", 0) + sections[".bss"] + sections[".stack"]
    assert flash < board.flash_bytes and ram < board.ram_bytes
    # the vector table opens .text: initial stack pointer, then the reset handler (Thumb bit set)
    nm = subprocess.run(["arm-none-eabi-nm", str(fw.binary)], capture_output=True, text=True, check=True).stdout
    symbols = {line.split()[2]: int(line.split()[0], 16) for line in nm.splitlines() if len(line.split()) == 3}
    text = tmp_path / "text.bin"
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".text", str(fw.binary), str(text)], check=True)
    stack, reset = np.frombuffer(text.read_bytes()[:8], "<u4")
    assert (stack, reset) == (symbols["__stack_top"], symbols["reset_handler"] | 1)
    if target == "pico":
        image = tmp_path / "boot2.bin"
        subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".boot2", str(fw.binary), str(image)], check=True)
        boot2 = image.read_bytes()
        assert len(boot2) == 256
        assert rp2040_boot2_crc(boot2[:252]) == int.from_bytes(boot2[252:], "little")


def test_xtensa_board_is_described_but_not_buildable_here():
    spec = TARGETS["esp32s3"]
    assert spec["compiler"] == "xtensa-esp32s3-elf-g++"
    assert (PROJECT_ROOT / "firmware" / "ports" / "esp32s3" / "platform_esp32s3.cc").is_file()


# ---- PlatformIO, offline ----

@needs_pio
def test_pio_project_config_parses_every_env():
    proc = subprocess.run([PIO, "project", "config", "-d", str(PROJECT_ROOT), "--json-output"], capture_output=True,
                          text=True, env=pio_env(Path("/nonexistent"), Path("model")), timeout=60)
    assert proc.returncode == 0, proc.stderr
    envs = {section[4:] for section, _ in json.loads(proc.stdout) if section.startswith("env:")}
    assert envs == ALL_ENVS


@needs_pio
def test_pio_run_qemu_m4_offline_is_bit_exact_with_tflite_micro(kws_model, kws_inputs, kws_reference, tmp_path):
    from tinyexit.harness import firmware

    elf = pio_run("qemu-m4", tmp_path, kws_model)
    with firmware("qemu-m4", elf) as dev:
        assert dev.info()["port"] == "qemu-mps2-an386"
        got = np.stack([dev.infer(x).output for x in kws_inputs[0]])
    assert np.array_equal(got, kws_reference)


@needs_pio
def test_pio_run_qemu_m4_runs_the_har_model_bit_exact(har_model, har, tmp_path):
    """The project's own staged HAR export through PlatformIO's qemu-m4 build, both exits forced in turn."""
    from tinyexit import manifest as mf
    from tinyexit.harness import firmware
    from tinyexit.policy import NEVER
    from tinyexit.reference import all_exit_logits, quantize_input

    m = mf.read(har_model[2])
    x = quantize_input(m, har.test.x[:: len(har.test) // 30][:30])
    logits = all_exit_logits(m, x)
    elf = pio_run("qemu-m4", tmp_path, har_model[2])
    with firmware("qemu-m4", elf) as dev:
        for exit_index, thresholds in ((0, {0: 0}), (1, {0: NEVER})):
            dev.set_policy(thresholds)
            got = np.stack([dev.infer(v).output for v in x])
            assert np.array_equal(got, logits[exit_index]), f"exit {exit_index}"


@needs_pio
def test_pio_run_qemu_m4_without_a_model_builds_the_shipped_example(tmp_path):
    """A PlatformIO user's first command in a fresh clone: no TINYEXIT_MODEL, so the example the repository
    ships (examples/har-tiny, made by its make_example.py), bit-exact with TFLite Micro at both exits."""
    from tinyexit import manifest as mf
    from tinyexit.codegen import model_hash
    from tinyexit.harness import firmware
    from tinyexit.policy import NEVER
    from tinyexit.reference import all_exit_logits

    example = PROJECT_ROOT / "examples" / "har-tiny" / "export"
    assert sum(p.stat().st_size for p in example.iterdir()) < 64_000  # a few kB of model, not a data set
    env = pio_env(tmp_path, example)
    del env["TINYEXIT_MODEL"]
    proc = subprocess.run([PIO, "run", "-d", str(PROJECT_ROOT), "-e", "qemu-m4"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "building the example model examples/har-tiny/export" in proc.stdout
    m = mf.read(example)
    x = np.random.default_rng(0).integers(-128, 128, (4, *m["input"]["shape"][1:]), dtype=np.int8)
    logits = all_exit_logits(m, x)
    with firmware("qemu-m4", tmp_path / "qemu-m4" / "firmware.elf") as dev:
        info = dev.info()
        assert (info["task"], info["stages"], info["exits"], info["port"]) == ("har", 2, 2, "qemu-mps2-an386")
        assert info["sha256"] == model_hash(m).hex()
        for exit_index, thresholds in ((0, {0: 0}), (1, {0: NEVER})):
            dev.set_policy(thresholds)
            assert np.array_equal(np.stack([dev.infer(v).output for v in x]), logits[exit_index]), f"exit {exit_index}"


@pytest.fixture(scope="module")
def pio_host_firmware(kws_model, tmp_path_factory):
    assert PIO is not None, "PlatformIO not installed: run ./setup.sh"
    return pio_run("host", tmp_path_factory.mktemp("pio_host"), kws_model)


def test_pio_run_host_offline(pio_host_firmware, kws_inputs, kws_reference):
    from tinyexit.harness import firmware

    with firmware("host", pio_host_firmware) as dev:
        assert np.array_equal(dev.infer(kws_inputs[0][0]).output, kws_reference[0])


# ---- tinyexit flash ----

def test_flash_unknown_board_is_one_error_line(kws_model):
    proc = run_cli("flash", "--board", "uno", str(kws_model), timeout=60)
    assert_one_line_error(proc, "unknown board 'uno'", "nucleo-l4r5zi")


def test_flash_without_platformio_is_one_error_line(kws_model, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    proc = run_cli("flash", "--board", "pico", str(kws_model), timeout=60)
    assert_one_line_error(proc, "pio", "not found")


@needs_pio
def test_flash_build_only_builds_the_board_env(kws_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PLATFORMIO_BUILD_DIR", str(tmp_path))
    proc = run_cli("flash", "--board", "nucleo-l4r5zi", str(kws_model), "--build-only", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "nucleo-l4r5zi" / "firmware.elf").is_file()


@needs_pio
def test_flash_runs_the_boards_upload_command(kws_model, tmp_path, monkeypatch):
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "openocd"  # stands in for OpenOCD: records how it was called
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path / 'openocd.args'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PLATFORMIO_BUILD_DIR", str(tmp_path / "build"))
    proc = run_cli("flash", "--board", "nucleo-l4r5zi", str(kws_model), timeout=300)
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / "openocd.args").read_text().splitlines()
    elf = tmp_path / "build" / "nucleo-l4r5zi" / "firmware.elf"
    assert args == ["-f", "interface/stlink.cfg", "-f", "target/stm32l4x.cfg", "-c", f"program {elf} verify reset exit"]


# ---- tinyexit profile ----

@pytest.fixture
def host_serial_url(pio_host_firmware):
    proc = subprocess.Popen([str(pio_host_firmware), "--port", "0"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("PORT "), line
        yield f"socket://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


def test_profile_over_a_socket_writes_results_and_layers(host_serial_url, kws_model, kws_inputs, kws_reference, tmp_path):
    _, y, x_path, y_path = kws_inputs
    proc = run_cli("profile", str(kws_model), "--port", host_serial_url, "--inputs", str(x_path), "--labels",
                   str(y_path), "--out", str(tmp_path / "r.npz"), "--json", str(tmp_path / "s.json"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = np.load(tmp_path / "r.npz")
    assert np.array_equal(result["output"], kws_reference)
    assert np.array_equal(result["pred"], kws_reference.argmax(1))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["n"] == len(y) and summary["target"] == "host" and summary["cycle_unit"] == "host-ns"
    assert [l["op"] for l in summary["layers"]][:2] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert len(summary["layers"]) == len(result["layer_cycles"]) == 13
    assert sum(l["macs"] for l in summary["layers"]) == summary["macs_per_inference"] == 2_656_768
    assert summary["energy_uj"] is None and "DEPTHWISE_CONV_2D" in proc.stdout


def test_profile_with_another_model_is_refused(host_serial_url, kws_model, kws_inputs, tmp_path):
    other = tmp_path / "other.tflite"  # the same graph, other bytes: another model hash
    other.write_bytes(kws_model.read_bytes() + bytes(16))
    proc = run_cli("profile", str(other), "--port", host_serial_url, "--inputs", str(kws_inputs[2]), timeout=60)
    assert_one_line_error(proc, "runs another model")


def test_profile_on_a_silent_link_is_one_error_line(kws_model, kws_inputs):
    proc = run_cli("profile", str(kws_model), "--port", "loop://", "--inputs", str(kws_inputs[2]), timeout=60)
    assert_one_line_error(proc, "unexpected reply")


# ---- energy in tinyexit sim ----

def test_sim_on_qemu_reports_energy_for_the_board_it_stands_in_for(kws_model, kws_inputs, tmp_path):
    x, _, _, _ = kws_inputs
    np.save(tmp_path / "x.npy", x[:2])
    build_dir = tmp_path / "build"
    proc = run_cli("sim", str(kws_model), "--target", "qemu-m4", "--inputs", str(tmp_path / "x.npy"),
                   "--json", str(tmp_path / "a.json"), "--build-dir", str(build_dir), timeout=300)
    assert proc.returncode == 0, proc.stderr
    a = json.loads((tmp_path / "a.json").read_text())
    l4 = boards.load("nucleo-l4r5zi")
    assert a["board"] == "nucleo-l4r5zi"
    assert a["energy_uj"] == pytest.approx(a["mean_instructions"] / l4.clock_hz * l4.active_power_w * 1e6)
    proc = run_cli("sim", str(kws_model), "--board", "nano33ble", "--inputs", str(tmp_path / "x.npy"),
                   "--json", str(tmp_path / "b.json"), "--build-dir", str(build_dir), timeout=300)
    assert proc.returncode == 0, proc.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    ble = boards.load("nano33ble")
    assert b["board"] == "nano33ble" and b["target"] == "qemu-m4"
    assert b["mean_instructions"] == a["mean_instructions"]  # -icount: the same counts every run
    assert b["energy_uj"] == pytest.approx(b["mean_instructions"] / 64e6 * ble.active_power_w * 1e6)


@pytest.mark.parametrize("args, fragment", [
    (["--board", "uno"], "unknown board 'uno'"),
    (["--board", "pico"], "no QEMU stand-in"),
    (["--board", "nucleo-l4r5zi", "--target", "host"], "nanoseconds"),
])
def test_sim_board_errors_are_one_line(args, fragment, kws_model, kws_inputs):
    proc = run_cli("sim", str(kws_model), "--inputs", str(kws_inputs[2]), *args, timeout=60)
    assert_one_line_error(proc, fragment)
