"""Where data, caches and outputs live by default, and where the kit's own files are: the firmware sources,
the board descriptions, the emulated targets, the PlatformIO platform and project file, the shipped example model.

In a checkout they are the repository's top-level folders (firmware/, boards/, sim/, pio/, platformio.ini,
examples/). An installed wheel carries a copy of them as package data in tinyexit/_data (setup.py copies
them in at build time); PROJECT_ROOT is whichever of the two holds them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_INSTALLED_DATA = PACKAGE_DIR / "_data"
# the checkout this package sits in, None when it runs from an installed wheel
CHECKOUT = None if (_INSTALLED_DATA / "firmware").is_dir() else PACKAGE_DIR.parent
PROJECT_ROOT = CHECKOUT or _INSTALLED_DATA

FIRMWARE_DIR = PROJECT_ROOT / "firmware"
BOARDS_DIR = PROJECT_ROOT / "boards"
SIM_DIR = PROJECT_ROOT / "sim"  # emulated targets (QEMU machines), one YAML file each
PIO_PLATFORM_DIR = PROJECT_ROOT / "pio" / "platform-tinyexit"
PLATFORMIO_INI = PROJECT_ROOT / "platformio.ini"
EXAMPLE_MODEL = PROJECT_ROOT / "examples" / "har-tiny" / "export"


def shared_datasets() -> Path:
    """The shared dataset folder: $TINYEXIT_DATASETS, else ../shared/datasets beside the project (the
    checkout; for an installed wheel, the working folder)."""
    env = os.environ.get("TINYEXIT_DATASETS")
    if env:
        return Path(env)
    return (CHECKOUT or Path.cwd()).resolve().parent / "shared" / "datasets"


def cache_dir() -> Path:
    """Cache for derived data (windows, features): $TINYEXIT_CACHE, else ~/.cache/tinyexit."""
    env = os.environ.get("TINYEXIT_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "tinyexit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pio_project(folder: Path) -> Path:
    """The PlatformIO project folder for `tinyexit flash` run in `folder`: `folder` itself. Without a
    platformio.ini there, one is written from the kit's, naming the kit's platform, example model and this
    Python by absolute path, so PlatformIO builds in the user's folder (workspace `folder`/out/pio)."""
    folder = Path(folder).resolve()
    ini = folder / "platformio.ini"
    if ini.is_file():
        return folder
    text = PLATFORMIO_INI.read_text()
    text = text.replace("${PROJECT_DIR}/pio/platform-tinyexit", PIO_PLATFORM_DIR.as_posix())
    text = text.replace("= examples/har-tiny/export", f"= {EXAMPLE_MODEL.as_posix()}")
    text = text.replace("\n[env]\n", f"\n[env]\ncustom_tinyexit_python = {Path(sys.executable).as_posix()}\n", 1)
    # the platform linked from the workspace, not PlatformIO's global folder, where a checkout links its own
    text = text.replace("\nworkspace_dir = out/pio\n", "\nworkspace_dir = out/pio\nplatforms_dir = out/pio/platforms\n", 1)
    header = (f"; written by `tinyexit flash` from {PLATFORMIO_INI} (tinyexit's envs, its platform and its Python);"
              " edit freely\n")
    tmp = ini.with_name(f".platformio.ini.{os.getpid()}.tmp")
    try:
        tmp.write_text(header + text)
        tmp.replace(ini)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        from tinyexit.errors import TinyexitError

        raise TinyexitError(f"cannot write {ini} for PlatformIO ({err.strerror or err}): run in a folder you can "
                            "write to") from None
    return folder
