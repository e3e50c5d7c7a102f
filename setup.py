"""Build hook only (the project is described in pyproject.toml): a wheel carries the kit's top-level folders as
package data in tinyexit/_data, copied in at build time, so an installed tinyexit builds firmware without a
checkout. tinyexit/paths.py looks there when the package does not sit in a checkout."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# what `tinyexit build`/`flash` read at run time, relative to the project root
PACKAGE_DATA = ["firmware", "boards", "sim", "pio/platform-tinyexit", "pio/bootstrap.py", "platformio.ini",
                "examples/har-tiny/export"]
SKIP = {"__pycache__", ".pio", ".DS_Store"}


class BuildPyWithKitData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout itself
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "tinyexit" / "_data"
        shutil.rmtree(target, ignore_errors=True)  # nothing left over from an earlier build in the same folder
        for name in PACKAGE_DATA:
            source = root / name
            files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
            for path in files:
                if SKIP.intersection(path.relative_to(root).parts) or path.suffix == ".pyc":
                    continue
                destination = target / path.relative_to(root)
                destination.parent.mkdir(parents=True, exist_ok=True)
                self.copy_file(str(path), str(destination))


setup(cmdclass={"build_py": BuildPyWithKitData})
