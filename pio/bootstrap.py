"""Offline PlatformIO set-up (idempotent; ./setup.sh runs it): what `pio run -e <env>` needs that would
otherwise come from PlatformIO's registry, which these machines cannot reach.

1. tool-scons: PlatformIO runs its builders with SCons from the core package `tool-scons`; it is made from
   PyPI's scons wheel, unpacked into $PLATFORMIO_CORE_DIR/packages/tool-scons with a package.json, a scons.py
   launcher and a .piopm naming owner `platformio` (without .piopm PlatformIO still asks the registry).
2. toolchain-gccarmnoneeabi: a folder holding a package.json and bin/ links to Debian's /usr/bin/arm-none-eabi-*,
   which platformio.ini names through `platform_packages = toolchain-gccarmnoneeabi@symlink://...`.

Usage: python3 pio/bootstrap.py [--force]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def scons_versions() -> tuple[str, str]:
    """(PyPI's SCons version, PlatformIO's package version) for the tool-scons this PlatformIO requires:
    it numbers SCons 4.x.y as 4.4XXYY.0 (PlatformIO 6.2 requires ~4.41101.0, i.e. SCons 4.11.1)."""
    package = "4.41101.0"
    try:
        from platformio.dependencies import get_core_dependencies

        package = get_core_dependencies()["tool-scons"].lstrip("~^=")
    except (ImportError, KeyError):
        pass
    digits = package.split(".")[1][1:]
    return f"{package.split('.')[0]}.{int(digits[:2])}.{int(digits[2:4])}", package


TOOLCHAIN_DIR_NAME = "tinyexit/toolchain-gccarmnoneeabi"


def core_dir() -> Path:
    return Path(os.environ.get("PLATFORMIO_CORE_DIR") or Path.home() / ".platformio")


def install_scons(force: bool) -> str:
    scons_version, package_version = scons_versions()
    package = core_dir() / "packages" / "tool-scons"
    meta = package / ".piopm"
    if not force and meta.is_file() and json.loads(meta.read_text()).get("version") == package_version:
        return f"tool-scons {package_version} already in {package}"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", f"scons=={scons_version}", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("scons-*.whl"))
        if package.exists():
            shutil.rmtree(package)
        package.mkdir(parents=True)
        with zipfile.ZipFile(wheel) as z:
            z.extractall(package)
    (package / "scons.py").write_text(
        "# Launcher PlatformIO calls: SCons from this folder (made by tinyexit's pio/bootstrap.py)\n"
        "import os\nimport sys\n\n"
        "sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\n"
        "from SCons.Script import main\n\nmain()\n")
    (package / "package.json").write_text(json.dumps(
        {"name": "tool-scons", "version": package_version,
         "description": f"SCons {scons_version} from PyPI's wheel (tinyexit offline bootstrap)"}, indent=1))
    meta.write_text(json.dumps(
        {"type": "tool", "name": "tool-scons", "version": package_version,
         "spec": {"owner": "platformio", "id": None, "name": "tool-scons", "requirements": None, "uri": None}}))
    return f"tool-scons {package_version} (SCons {scons_version}) installed in {package}"


def link_arm_toolchain() -> str:
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        return "arm-none-eabi-gcc not found: the ARM envs will not build (./setup.sh installs it)"
    bin_dir = Path(gcc).resolve().parent
    version = subprocess.run([gcc, "-dumpfullversion"], capture_output=True, text=True).stdout.strip() or "0.0.0"
    major, minor, patch = (version.split(".") + ["0", "0"])[:3]
    package = core_dir() / TOOLCHAIN_DIR_NAME
    (package / "bin").mkdir(parents=True, exist_ok=True)
    for old in (package / "bin").iterdir():
        old.unlink()
    for tool in sorted(bin_dir.glob("arm-none-eabi-*")):
        (package / "bin" / tool.name).symlink_to(tool)
    # PlatformIO's numbering for GCC x.y.z: 1.xxyyzz.0
    (package / "package.json").write_text(json.dumps(
        {"name": "toolchain-gccarmnoneeabi", "version": f"1.{int(major):02d}{int(minor):02d}{int(patch):02d}.0",
         "description": f"links to the system's arm-none-eabi GCC {version} in {bin_dir}"}, indent=1))
    return f"toolchain-gccarmnoneeabi (GCC {version}, links to {bin_dir}) in {package}"


def main() -> int:
    force = "--force" in sys.argv[1:]
    try:
        print("pio bootstrap:", install_scons(force))
        print("pio bootstrap:", link_arm_toolchain())
    except (OSError, subprocess.CalledProcessError, StopIteration) as err:
        print(f"pio bootstrap: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
