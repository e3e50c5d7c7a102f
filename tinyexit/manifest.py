"""`manifest.json`: the one contract between export (Python) and codegen, harness and reports.

Layout (version 1):
  format: "tinyexit.manifest", version: 1, task, classes
  input:  shape, dtype, scale, zero_point, preprocessing (how raw data becomes the float input)
  stages: [{index, file, sha256, inputs: [tensor], outputs: [tensor + role "features"|"logits"],
            macs, weight_bytes: {"int8"|"int4"|"int2": filter bytes as stored (sub-byte: packed),
            "bias": bytes}, exit: exit index or null}]
  exits:  [{index, stage, output (index into the stage's outputs), final, classes,
            policy: null | {kind: "max_prob", threshold (float), threshold_q15 (int), logit_scale}}]
  layers: [{stage, op, output, macs, weight_dtype, weight_bits}]: weight_bits 8, 4 or 2 (4 and 2: int8
          values in [-8, 7] / [-2, 1], which codegen packs; or TFLite's INT4 type), null without weights
  unsplit: {file, sha256}: the same network as one model (for stock TFLite Micro and checks)
  cost:   {macs_to_exit: [...], macs_all_stages, macs_no_exit, instructions (optional, written by
          `calibrate --target`): {qemu target: {unit, samples, stage: [per stage], to_exit: [cumulative]}}}
where tensor = {name, shape, dtype, scale, zero_point}. Stage k+1's input is stage k's features output,
with the same scale and zero point. See tinyexit/policy.py for the exit test.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tinyexit.errors import TinyexitError

FORMAT = "tinyexit.manifest"
VERSION = 1


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write(directory: Path, manifest: dict) -> Path:
    path = Path(directory) / "manifest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(path)
    return path


def read(directory: str | Path, verify: bool = True) -> dict:
    """Load and check a manifest: format, version, stage files present with matching sha256."""
    directory = Path(directory)
    path = directory / "manifest.json" if directory.is_dir() else directory
    if not path.is_file():
        raise TinyexitError(f"no manifest.json in {directory} (export a model with `tinyexit export` first)")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise TinyexitError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TinyexitError(f"{path}: not a tinyexit manifest")
    if manifest.get("version") != VERSION:
        raise TinyexitError(f"{path}: manifest version {manifest.get('version')} is not supported "
                            f"(this tinyexit reads version {VERSION})")
    try:
        stages = manifest["stages"]
        for stage in stages:
            f = path.parent / stage["file"]
            if not f.is_file():
                raise TinyexitError(f"{path}: stage file {stage['file']} is missing")
            if verify and sha256_file(f) != stage["sha256"]:
                raise TinyexitError(f"{path}: {stage['file']} does not match its sha256 in the manifest")
        for e in manifest["exits"]:
            if not 0 <= e["stage"] < len(stages):
                raise TinyexitError(f"{path}: exit {e['index']} names stage {e['stage']}, which does not exist")
    except (KeyError, TypeError) as err:
        raise TinyexitError(f"{path}: malformed manifest (missing {err})") from None
    manifest["_dir"] = str(path.parent)
    return manifest


def stage_path(manifest: dict, stage: dict) -> Path:
    return Path(manifest["_dir"]) / stage["file"]


def save(manifest: dict) -> Path:
    """Write back a manifest obtained from `read` (e.g. after calibration set a threshold)."""
    clean = {k: v for k, v in manifest.items() if not k.startswith("_")}
    return write(Path(manifest["_dir"]), clean)
