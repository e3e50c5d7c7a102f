"""Shared fixtures: the real datasets, a private cache and temp dir, and a small trained+exported HAR model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinyexit.paths import shared_datasets


@pytest.fixture(scope="session", autouse=True)
def _private_dirs(tmp_path_factory):
    # TensorFlow's autograph leaves files in the temp folder; the window cache is rebuilt per session so
    # the tests also exercise the loader itself
    root = tmp_path_factory.mktemp("env")
    os.environ["TMPDIR"] = str(root / "tmp")
    os.environ["TINYEXIT_CACHE"] = str(root / "cache")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    (root / "tmp").mkdir()
    yield


@pytest.fixture(scope="session")
def datasets() -> Path:
    path = shared_datasets()
    if not (path / "har" / "HAPT.tar.xz").is_file():
        pytest.fail(f"real data missing: {path} (the tests need ../shared/datasets beside the project)")
    return path


@pytest.fixture(scope="session")
def har(datasets):
    from tinyexit.data import load

    return load("har", str(datasets / "har" / "HAPT.tar.xz"))


@pytest.fixture(scope="session")
def har_model(har, tmp_path_factory):
    """A HAR early-exit model trained briefly (mechanics, not accuracy) and exported to int8 stages."""
    from tinyexit import pipeline

    out = tmp_path_factory.mktemp("har_model")
    model, spec = pipeline.train(har, out / "model", exits_after=[2], epochs=3, verbose=0)
    pipeline.export(model, spec, har, out / "export")
    return model, spec, out / "export"


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `tinyexit ...` as a user would: a separate process (`env`: variables to set for it)."""
    return subprocess.run([sys.executable, "-m", "tinyexit", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("tinyexit: error:")]
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
