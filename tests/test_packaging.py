"""The wheel works outside a checkout: `pip wheel .` carries firmware/, boards/, the PlatformIO platform,
platformio.ini and the example model as package data (tinyexit/_data); installed into a fresh environment, it
builds a firmware in a folder of the user's, and `tinyexit flash` runs PlatformIO there."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error
from tinyexit.paths import CHECKOUT

KIT_FOLDERS = ("firmware", "boards", "sim", "pio/platform-tinyexit", "examples/har-tiny/export")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    assert CHECKOUT is not None, "the tests run from a checkout"
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
                           "-w", str(out), str(CHECKOUT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(out.glob("tinyexit-*.whl"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> dict:
    """A fresh environment outside the checkout holding the wheel; TensorFlow & co. come from the system's
    site-packages (which also hold the editable checkout: the venv's own copy must win)."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q",
                           "--disable-pip-version-check", str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PLATFORMIO_BUILD_DIR", "TINYEXIT_MODEL")}
    env.update(PATH=f"{root / 'bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(root),
               PLATFORMIO_DISABLE_UPGRADE_CHECK="true", PLATFORMIO_SETTING_ENABLE_TELEMETRY="No")
    return {"python": python, "tinyexit": root / "bin" / "tinyexit", "env": env,
            "site": root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"}


@pytest.fixture()
def user_folder(tmp_path) -> Path:
    folder = tmp_path / "my-project"  # not the checkout, nothing of the kit's in it
    folder.mkdir()
    return folder


def run_installed(venv: dict, folder: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv["tinyexit"]), *args], cwd=folder, env=venv["env"], capture_output=True, text=True,
                          timeout=timeout)


def test_wheel_carries_the_kit_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in KIT_FOLDERS:
        files = [p for p in (CHECKOUT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert files, folder
        missing = [str(p.relative_to(CHECKOUT)) for p in files
                   if f"tinyexit/_data/{p.relative_to(CHECKOUT).as_posix()}" not in names]
        assert not missing, missing
    assert {"tinyexit/_data/platformio.ini", "tinyexit/_data/pio/bootstrap.py"} <= names


def test_installed_wheel_builds_a_firmware_outside_the_checkout(venv, user_folder, datasets):
    from tinyexit.harness import firmware
    from tinyexit.reference import StageInterpreter

    where = subprocess.run([str(venv["python"]), "-c", "import tinyexit, tinyexit.paths as p; "
                            "print(tinyexit.__file__); print(p.PROJECT_ROOT); print(p.CHECKOUT)"],
                           cwd=user_folder, env=venv["env"], capture_output=True, text=True, timeout=120)
    package_file, project_root, checkout = where.stdout.split()
    assert Path(package_file) == venv["site"] / "tinyexit" / "__init__.py", where.stderr
    assert (Path(project_root), checkout) == (venv["site"] / "tinyexit" / "_data", "None")

    model = datasets / "models" / "mlperf_kws_ref_model_int8.tflite"
    proc = run_installed(venv, user_folder, "build", str(model), "--target", "host")
    assert proc.returncode == 0, proc.stderr[-3000:]
    binary = user_folder / "out" / "build" / "host" / "tinyexit_host"
    assert binary.is_file() and f"built {binary.relative_to(user_folder)}" in proc.stdout
    # compiled from the installed copy of the firmware, not the checkout's
    log = (user_folder / "out" / "build" / "host" / "build.log").read_text()
    assert f"-I{venv['site'] / 'tinyexit' / '_data' / 'firmware' / 'include'}" in log and str(CHECKOUT) not in log
    x = np.random.default_rng(0).integers(-128, 128, (49, 10, 1), dtype=np.int8)
    with firmware("host", binary) as dev:
        assert dev.info()["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
        assert np.array_equal(dev.infer(x).output, StageInterpreter(model.read_bytes())(x[None])[0].reshape(-1))


def test_installed_flash_runs_platformio_in_the_users_folder(venv, user_folder, datasets):
    assert shutil.which("pio"), "PlatformIO not installed: run ./setup.sh"
    proc = run_installed(venv, user_folder, "flash", "--board", "uno", "model.tflite")
    assert_one_line_error(proc, "unknown board 'uno' (known: esp32s3, nano33ble, nucleo-h7a3zi-q, nucleo-l4r5zi, pico)")

    model = datasets / "models" / "mlperf_kws_ref_model_int8.tflite"
    proc = run_installed(venv, user_folder, "flash", "--board", "nucleo-l4r5zi", str(model), "--build-only")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"pio run -d {user_folder} -e nucleo-l4r5zi" in proc.stdout
    assert (user_folder / "out" / "pio" / "build" / "nucleo-l4r5zi" / "firmware.elf").is_file()
    ini = (user_folder / "platformio.ini").read_text()  # written there, naming the installed platform and Python
    data = venv["site"] / "tinyexit" / "_data"
    assert f"platform = symlink://{data / 'pio' / 'platform-tinyexit'}\n" in ini
    assert f"custom_tinyexit_python = {venv['python']}\n" in ini
    assert f"custom_tinyexit_default_model = {data / 'examples' / 'har-tiny' / 'export'}\n" in ini
    assert "[env:nucleo-l4r5zi]" in ini and str(CHECKOUT) not in ini
