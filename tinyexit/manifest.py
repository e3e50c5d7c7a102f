"""`manifest.json`: the one contract between export (Python) and codegen, harness and reports.

Layout (version 1), checked field by field on every read and write (SCHEMA below, then `check_references`):
  format: "tinyexit.manifest", version: 1, task, classes (class names, or their count)
  input:  shape, dtype, scale, zero_point, preprocessing (how raw data becomes the float input)
  stages: [{index, file, sha256, inputs: [tensor], outputs: [tensor + role "features"|"logits"],
            macs, weight_bytes: {"int8"|"int4"|"int2": filter bytes as stored (sub-byte: packed),
            "bias": bytes}, exit: exit index or null}]
  exits:  [{index, stage, output (index into the stage's outputs), final, classes, logit_scale,
            policy: null | {kind: "max_prob"|"margin"|"entropy", threshold (float), threshold_q15 (int)}}]
  layers: [{stage, op, output, macs, weight_dtype, weight_bits}]: weight_bits 8, 4 or 2 (4 and 2: int8
          values in [-8, 7] / [-2, 1], which codegen packs; or TFLite's INT4 type), null without weights
  unsplit: {file, sha256}: the same network as one model (for stock TFLite Micro and checks)
  cost:   {macs_to_exit: [...], macs_all_stages, macs_no_exit, instructions (optional, written by
          `calibrate --target`): {qemu target: {unit, samples, stage: [per stage], to_exit: [cumulative]}}}
  offload (optional, written by tinyexit.offload): the device->edge policy: per early exit its threshold
          and the cut it sends (null: continue on the device), per cut the codec and what the edge runs
where tensor = {name, shape, dtype, scale, zero_point}. Stage k+1's input is stage k's features output
(its first output), with the same shape, scale and zero point. Exit k sits on stage k; exactly one exit,
the last, is final (it always answers). See tinyexit/policy.py for the exit test.

Every problem is one TinyexitError sentence naming the field, e.g. `exits[0].policy.threshold_q15 must be
an integer from 0 to 32769, not "high"`. With `verify`, each stage file must match its sha256, parse as a
TFLite flatbuffer (tinyexit.tflite_graph verifies it) and have exactly the inputs and outputs the manifest
describes.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path, PurePosixPath

from tinyexit import policy
from tinyexit.errors import TinyexitError

FORMAT = "tinyexit.manifest"
VERSION = 1


# ---- a small schema language: each spec checks a value at a path and raises one sentence ----

def _show(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Spec:
    def check(self, value, path: str) -> None:
        raise NotImplementedError

    def fail(self, value, path: str, expected: str):
        raise TinyexitError(f"{path} must be {expected}, not {_show(value)}")


class Int(Spec):
    def __init__(self, lo: int | None = None, hi: int | None = None, choices: tuple[int, ...] | None = None):
        self.lo, self.hi, self.choices = lo, hi, choices

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.lo is not None and self.hi is not None:
            return f"an integer from {self.lo} to {self.hi}"
        return "an integer" + (f" >= {self.lo}" if self.lo is not None else "")

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int) or \
                (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi) or \
                (self.choices and value not in self.choices):
            self.fail(value, path, self.describe())


class Num(Spec):
    """A finite number (ints allowed), `positive`: > 0."""

    def __init__(self, lo: float | None = None, positive: bool = False):
        self.lo, self.positive = lo, positive

    def check(self, value, path):
        try:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)) \
                and (self.lo is None or value >= self.lo) and (not self.positive or value > 0)
        except OverflowError:  # an integer beyond any float
            ok = False
        if not ok:
            self.fail(value, path, "a positive finite number" if self.positive else
                      "a finite number" + (f" >= {self.lo:g}" if self.lo is not None else ""))


class Str(Spec):
    def __init__(self, choices: tuple[str, ...] | None = None, hex_digits: int | None = None):
        self.choices, self.hex_digits = choices, hex_digits

    def check(self, value, path):
        if not isinstance(value, str) or (self.choices is not None and value not in self.choices):
            self.fail(value, path, "one of " + ", ".join(self.choices) if self.choices else "a string")
        if self.hex_digits and (len(value) != self.hex_digits or any(c not in "0123456789abcdef" for c in value)):
            self.fail(value, path, f"{self.hex_digits} lowercase hex digits")
        if not self.choices and not self.hex_digits and not value:
            self.fail(value, path, "a non-empty string")


class Bool(Spec):
    def check(self, value, path):
        if not isinstance(value, bool):
            self.fail(value, path, "true or false")


class Any(Spec):
    def __init__(self, kind: type | tuple[type, ...] = object, what: str = "a value"):
        self.kind, self.what = kind, what

    def check(self, value, path):
        if not isinstance(value, self.kind):
            self.fail(value, path, self.what)


class Maybe(Spec):
    """null or `spec`."""

    def __init__(self, spec: Spec):
        self.spec = spec

    def check(self, value, path):
        if value is not None:
            self.spec.check(value, path)


class Either(Spec):
    def __init__(self, *specs: Spec, what: str):
        self.specs, self.what = specs, what

    def check(self, value, path):
        for spec in self.specs:
            try:
                spec.check(value, path)
                return
            except TinyexitError:
                pass
        self.fail(value, path, self.what)


class List(Spec):
    def __init__(self, item: Spec, min_len: int = 0):
        self.item, self.min_len = item, min_len

    def check(self, value, path):
        if not isinstance(value, list):
            self.fail(value, path, "a list")
        if len(value) < self.min_len:
            raise TinyexitError(f"{path} must have at least {self.min_len} entr{'y' if self.min_len == 1 else 'ies'}")
        for i, v in enumerate(value):
            self.item.check(v, f"{path}[{i}]")


class Map(Spec):
    """A JSON object with string keys and values of one spec."""

    def __init__(self, value: Spec):
        self.value = value

    def check(self, value, path):
        if not isinstance(value, dict):
            self.fail(value, path, "an object")
        for k, v in value.items():
            self.value.check(v, f"{path}.{k}")


class Obj(Spec):
    """A JSON object with known keys: `required` and `optional` (other keys are left alone)."""

    def __init__(self, required: dict[str, Spec], optional: dict[str, Spec] | None = None):
        self.required, self.optional = required, optional or {}

    def check(self, value, path):
        if not isinstance(value, dict):
            self.fail(value, path, "an object")
        for key, spec in self.required.items():
            if key not in value:
                raise TinyexitError(f"{path}.{key} is missing")
            spec.check(value[key], f"{path}.{key}")
        for key, spec in self.optional.items():
            if key in value:
                spec.check(value[key], f"{path}.{key}")


DTYPES = ("int8",)  # what the kit's stages take and give (full-integer int8 activations)
SHA256 = Str(hex_digits=64)
COUNT = Int(lo=0)
TENSOR = {"name": Any(str, "a string"), "shape": List(Int(lo=1), min_len=1), "dtype": Str(DTYPES),
          "scale": Num(positive=True), "zero_point": Int(-128, 127)}
POLICY = Obj({"kind": Str(policy.KINDS), "threshold": Num(lo=0), "threshold_q15": Int(0, policy.NEVER)})
INSTRUCTIONS = Obj({"stage": List(Num(lo=0)), "to_exit": List(Num(lo=0))},
                   {"unit": Str(), "samples": COUNT})

CODEC = Obj({"kind": Str(("raw", "lossless", "requant4", "requant2")), "zero_point": Int(-128, 127),
             "shift": Int(0, 8), "signed_codes": Bool()})
OFFLOAD = Obj({
    "board": Str(), "target": Str(), "max_offload_rate": Num(lo=0), "max_bytes_fraction": Num(lo=0),
    "link": Obj({"name": Str(("uart", "ble", "wifi")), "bytes_per_s": Num(positive=True),
                 "energy_uj_per_byte": Num(positive=True)}),
    "exits": List(Obj({"exit": COUNT, "threshold_q15": Int(0, policy.NEVER), "cut": Maybe(Int(lo=-1)),
                       "offload_below_q15": Int(0, policy.NEVER)})),
    "cuts": List(Obj({"cut": Int(lo=-1), "values": Int(lo=1), "codec": CODEC, "bytes_mean": Num(lo=0),
                      "codec_ratio": Num(lo=0),
                      "edge": Obj({"runs": Str(("model", "stages"))},
                                  {"file": Str(), "sha256": SHA256, "first_stage": COUNT, "classes": Int(lo=1),
                                   "input": Obj({"shape": List(Int(lo=1), min_len=1), "scale": Num(positive=True),
                                                 "zero_point": Int(-128, 127)})})})),
}, {"validation": Any(dict, "an object")})

SCHEMA = Obj({
    "format": Str((FORMAT,)),
    "version": Int(choices=(VERSION,)),
    "task": Str(),
    "classes": Either(List(Any(str, "a string"), min_len=1), Int(lo=1),
                      what="a non-empty list of class names or a positive integer"),
    "input": Obj({**TENSOR, "preprocessing": Any(dict, "an object")}),
    "stages": List(Obj({
        "index": COUNT, "file": Str(), "sha256": SHA256,
        "inputs": List(Obj(TENSOR), min_len=1),
        "outputs": List(Obj({**TENSOR, "role": Str(("features", "logits"))}), min_len=1),
        "macs": COUNT, "weight_bytes": Map(COUNT),
    }, {"exit": Maybe(COUNT)}), min_len=1),
    "exits": List(Obj({
        "index": COUNT, "stage": COUNT, "output": COUNT, "final": Bool(), "classes": Int(lo=1),
        "logit_scale": Num(positive=True), "policy": Maybe(POLICY),
    }), min_len=1),
    "cost": Obj({"macs_to_exit": List(COUNT, min_len=1), "macs_all_stages": COUNT},
                {"macs_no_exit": Maybe(COUNT), "instructions": Map(INSTRUCTIONS)}),
}, {
    "layers": List(Obj({"stage": COUNT, "op": Str(), "output": Any(str, "a string"), "macs": COUNT},
                       {"weight_dtype": Maybe(Str()), "weight_bits": Maybe(Int(choices=(8, 4, 2)))})),
    "unsplit": Obj({"file": Str(), "sha256": SHA256}),
    "data": Str(),  # an imported export's data folder (tinyexit/data/arrays.py layout), inside the export
    "offload": OFFLOAD,
})


def _same_tensor(a: dict, b: dict) -> bool:
    return (a["shape"] == b["shape"] and a["dtype"] == b["dtype"] and a["zero_point"] == b["zero_point"]
            and math.isclose(a["scale"], b["scale"], rel_tol=1e-6))


def _tensor_text(t: dict) -> str:
    return f"shape {t['shape']}, {t['dtype']}, scale {t['scale']:.6g}, zero point {t['zero_point']}"


def check_references(m: dict) -> None:
    """What the schema cannot say: indices, the stage chain, one final exit on the last stage, costs."""
    stages, exits = m["stages"], m["exits"]
    for i, s in enumerate(stages):
        if s["index"] != i:
            raise TinyexitError(f"stages[{i}].index must be {i} (stages are listed in order), not {s['index']}")
        f = PurePosixPath(s["file"])
        if f.is_absolute() or ".." in f.parts or "\\" in s["file"]:
            raise TinyexitError(f"stages[{i}].file must name a file inside the export folder, not {_show(s['file'])}")
    if "data" in m:
        f = PurePosixPath(m["data"])
        if f.is_absolute() or ".." in f.parts or "\\" in m["data"]:
            raise TinyexitError(f"data must name a folder inside the export folder, not {_show(m['data'])}")
    files = [s["file"] for s in stages]
    if len(set(files)) != len(files):
        raise TinyexitError("stages[].file must differ from stage to stage")
    if len(stages[0]["inputs"]) != 1 or not _same_tensor(stages[0]["inputs"][0], m["input"]):
        raise TinyexitError(f"stages[0].inputs must be the one model input ({_tensor_text(m['input'])})")
    for k, s in enumerate(stages):
        last = k == len(stages) - 1
        if not last and s["outputs"][0]["role"] != "features":
            raise TinyexitError(f"stages[{k}].outputs[0].role must be \"features\" (the tensor stage {k + 1} takes)")
        roles = [o["role"] for o in s["outputs"][0 if last else 1:]]
        if "features" in roles:
            raise TinyexitError(f"stages[{k}].outputs: only the first output of a stage that is not the last may "
                                f"be \"features\"")
        if k > 0:
            prev = stages[k - 1]["outputs"][0]
            if len(s["inputs"]) != 1 or not _same_tensor(s["inputs"][0], prev):
                raise TinyexitError(f"stages[{k}].inputs must be stage {k - 1}'s features output ({_tensor_text(prev)})")
    if len(exits) != len(stages):
        raise TinyexitError(f"exits must hold one exit per stage ({len(stages)}), not {len(exits)}")
    for j, e in enumerate(exits):
        where = f"exits[{j}]"
        if e["index"] != j:
            raise TinyexitError(f"{where}.index must be {j} (exits are listed in order), not {e['index']}")
        if e["stage"] != j:
            raise TinyexitError(f"{where}.stage must be {j} (exit k sits on stage k), not {e['stage']}")
        outputs = stages[j]["outputs"]
        if e["output"] >= len(outputs):
            raise TinyexitError(f"{where}.output must index stage {j}'s {len(outputs)} outputs, not {e['output']}")
        logits = outputs[e["output"]]
        if logits["role"] != "logits":
            raise TinyexitError(f"{where}.output must name a \"logits\" output of stage {j}, not its "
                                f"{logits['role']} output {e['output']}")
        size = math.prod(logits["shape"])
        if e["classes"] != size:
            raise TinyexitError(f"{where}.classes must be {size} (the size of its logits tensor), not {e['classes']}")
        if not math.isclose(e["logit_scale"], logits["scale"], rel_tol=1e-6):
            raise TinyexitError(f"{where}.logit_scale must be its logits tensor's scale {logits['scale']:.6g}, "
                                f"not {_show(e['logit_scale'])}")
        if e["final"] != (j == len(exits) - 1):
            raise TinyexitError(f"{where}.final must be {str(j == len(exits) - 1).lower()}: exactly one exit, the "
                                f"last stage's, is final")
        p = e["policy"]
        if p is not None and policy.threshold_q15(p["threshold"]) != p["threshold_q15"]:
            raise TinyexitError(f"{where}.policy.threshold {_show(p['threshold'])} and threshold_q15 "
                                f"{p['threshold_q15']} disagree (that threshold is q15 "
                                f"{policy.threshold_q15(p['threshold'])}): set both, or run `tinyexit calibrate`")
        if stages[j].get("exit") is not None and stages[j]["exit"] != j:
            raise TinyexitError(f"stages[{j}].exit must be {j} (the exit on that stage), not {stages[j]['exit']}")
    classes = m["classes"] if isinstance(m["classes"], int) else len(m["classes"])
    if any(e["classes"] != classes for e in exits):
        raise TinyexitError(f"classes lists {classes} classes, but the exits' logits have "
                            f"{sorted({e['classes'] for e in exits})}")
    cost = m["cost"]
    cumulative = [sum(s["macs"] for s in stages[:k + 1]) for k in range(len(stages))]
    if cost["macs_to_exit"] != cumulative:
        raise TinyexitError(f"cost.macs_to_exit must be the stages' cumulative MACs {cumulative}, "
                            f"not {_show(cost['macs_to_exit'])}")
    if cost["macs_all_stages"] != cumulative[-1]:
        raise TinyexitError(f"cost.macs_all_stages must be {cumulative[-1]} (all stages' MACs), "
                            f"not {cost['macs_all_stages']}")
    for target, counts in cost.get("instructions", {}).items():
        if len(counts["stage"]) != len(counts["to_exit"]):
            raise TinyexitError(f"cost.instructions.{target}: stage and to_exit must have one entry per stage each")
    for i, layer in enumerate(m.get("layers", [])):
        if layer["stage"] >= len(stages):
            raise TinyexitError(f"layers[{i}].stage must be a stage index below {len(stages)}, not {layer['stage']}")
    if "offload" in m:
        _check_offload(m)


def _check_offload(m: dict) -> None:
    off, stages, exits = m["offload"], m["stages"], m["exits"]
    every = [e["index"] for e in exits]
    if [x["exit"] for x in off["exits"]] != every:
        raise TinyexitError(f"offload.exits must list the exits {every} in order, not "
                            f"{[x['exit'] for x in off['exits']]}")
    cuts = [c["cut"] for c in off["cuts"]]
    if len(set(cuts)) != len(cuts):
        raise TinyexitError("offload.cuts must list each cut once")
    for i, x in enumerate(off["exits"]):
        stage = exits[x["exit"]]["stage"] if not exits[x["exit"]]["final"] else -1  # the final exit: the input only
        if x["cut"] is not None and x["cut"] not in (-1, stage):
            allowed = "-1 (the model input)" + (f", {stage} (its stage's features)" if stage >= 0 else "")
            raise TinyexitError(f"offload.exits[{i}].cut must be {allowed} or null, not {x['cut']}")
        if x["cut"] is not None and x["cut"] not in cuts:
            raise TinyexitError(f"offload.exits[{i}].cut {x['cut']} is not described in offload.cuts")
    for i, c in enumerate(off["cuts"]):
        where = f"offload.cuts[{i}]"
        if c["cut"] >= len(stages) - 1:
            raise TinyexitError(f"{where}.cut must be -1 or a stage before the last, not {c['cut']}")
        size = math.prod(m["input"]["shape"] if c["cut"] < 0 else stages[c["cut"]]["outputs"][0]["shape"])
        if c["values"] != size:
            raise TinyexitError(f"{where}.values must be {size} (the size of that tensor), not {c['values']}")
        edge = c["edge"]
        if edge["runs"] == "stages" and edge.get("first_stage") != c["cut"] + 1:
            raise TinyexitError(f"{where}.edge.first_stage must be {c['cut'] + 1} (the stage after the cut)")
        if edge["runs"] == "model":
            if c["cut"] != -1:
                raise TinyexitError(f"{where}: an edge model takes the model input (cut -1), not cut {c['cut']}")
            missing = [k for k in ("file", "sha256", "input") if k not in edge]
            if missing:
                raise TinyexitError(f"{where}.edge.{missing[0]} is missing")
            f = PurePosixPath(edge["file"])
            if f.is_absolute() or ".." in f.parts or "\\" in edge["file"]:
                raise TinyexitError(f"{where}.edge.file must name a file inside the export folder, not "
                                    f"{_show(edge['file'])}")


def validate(manifest, source: str = "manifest") -> None:
    """The schema and the cross-references; every failure is one sentence starting with `source`."""
    try:
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise TinyexitError("not a tinyexit manifest (format is not \"tinyexit.manifest\")")
        if manifest.get("version") != VERSION:
            raise TinyexitError(f"manifest version {_show(manifest.get('version'))} is not supported "
                                f"(this tinyexit reads version {VERSION})")
        SCHEMA.check(manifest, "manifest")
        check_references(manifest)
    except TinyexitError as err:
        text = str(err)
        text = text[len("manifest."):] if text.startswith("manifest.") else text
        raise TinyexitError(f"{source}: {text}") from None


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write(directory: Path, manifest: dict, outputs=None) -> Path:
    """Validate and write `directory/manifest.json` atomically; with `outputs` (tinyexit.atomic.Outputs), as
    part of that group of files (renamed into place together when the group commits)."""
    from tinyexit import atomic

    path = Path(directory) / "manifest.json"
    validate(manifest, "manifest to write")
    text = json.dumps(manifest, indent=1)
    if outputs is None:
        atomic.write_text(path, text)
    else:
        outputs.write_text(path, text)
    return path


def _verify_stage(path: Path, index: int, stage: dict, data: bytes) -> None:
    """The stage file is a sound TFLite model whose inputs and outputs are the ones the manifest describes."""
    from tinyexit.tflite_graph import Graph

    g = Graph(data, f"{path.parent / stage['file']}")
    for what, indices, described in (("inputs", g.inputs, stage["inputs"]), ("outputs", g.outputs, stage["outputs"])):
        actual = [g.tensors[t].describe() for t in indices]
        if len(actual) != len(described) or not all(
                a["scale"] is not None and a["zero_point"] is not None and _same_tensor(a, d)
                for a, d in zip(actual, described)):
            raise TinyexitError(f"{path}: stages[{index}].{what} do not describe {stage['file']} (the file has "
                                f"{'; '.join(_tensor_text(a) if a['scale'] is not None else str(a['shape']) for a in actual)})")


def read(directory: str | Path, verify: bool = True) -> dict:
    """Load and check a manifest (SCHEMA, cross-references); with `verify` also every stage file (hash,
    flatbuffer, described inputs and outputs). Stage files must exist either way."""
    directory = Path(directory)
    path = directory / "manifest.json" if directory.is_dir() else directory
    if not path.is_file():
        if directory.suffix == ".tflite":
            raise TinyexitError(f"{directory}: this command takes an export folder (manifest.json + stages), "
                                f"not a .tflite file")
        raise TinyexitError(f"no manifest.json in {directory} (export a model with `tinyexit export` first)")
    try:
        manifest = json.loads(path.read_text())
    except RecursionError:
        raise TinyexitError(f"{path}: not valid JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise TinyexitError(f"{path}: not valid JSON ({str(err)[:120]})") from None
    except OSError as err:
        raise TinyexitError(f"{path}: cannot read it ({err.strerror})") from None
    validate(manifest, str(path))
    for i, stage in enumerate(manifest["stages"]):
        f = path.parent / stage["file"]
        if not f.is_file():
            raise TinyexitError(f"{path}: stage file {stage['file']} is missing")
        if verify:
            data = f.read_bytes()
            if hashlib.sha256(data).hexdigest() != stage["sha256"]:
                raise TinyexitError(f"{path}: {stage['file']} does not match its sha256 in the manifest")
            _verify_stage(path, i, stage, data)
    manifest["_dir"] = str(path.parent)
    return manifest


def stage_path(manifest: dict, stage: dict) -> Path:
    return Path(manifest["_dir"]) / stage["file"]


def save(manifest: dict, outputs=None) -> Path:
    """Write back a manifest obtained from `read` (e.g. after calibration set a threshold); `outputs`: see write."""
    clean = {k: v for k, v in manifest.items() if not k.startswith("_")}
    return write(Path(manifest["_dir"]), clean, outputs)
