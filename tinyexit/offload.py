"""The offload decision (issue 17): which samples a device hands to the edge, at which cut, with which codec.

The firmware (SET_OFFLOAD) stops at an early exit that is not confident of a sample and sends the encoded cut:
stage k's features (the edge runs the remaining stages) or the model input (the edge runs its own, bigger
model). Here, on the validation split, every candidate policy is simulated exactly as the firmware decides
(tinyexit.policy scores, the same integer thresholds): per early exit, continue on the device or offload a cut,
and the exit thresholds. The chosen candidate is the most accurate one within the budgets

    offload rate <= max_offload_rate (0.30)   and   bytes sent per sample <= max_bytes_fraction (0.30) x the
    raw input bytes of always offloading,

the least device energy among equals. Device energy = the board's energy proxy (instructions as cycles /
clock x active power, tinyexit.boards) for the stages run + the link's energy per byte for the bytes sent
(payload bytes; frame headers and the reply are left out). The encoding's instructions are not in the
simulation (the firmware counts them; `tinyexit edge run` reports the measured figure).

Manifest section (`offload`, optional; tinyexit/manifest.py checks it):
  board, link {name, bytes_per_s, energy_uj_per_byte}, target (the instruction counts' qemu target),
  max_offload_rate, max_bytes_fraction,
  exits:  [{exit, threshold_q15, cut, offload_below_q15}] one per exit; cut null: never offload there; an early
          exit offloads what it does not take (offload_below_q15 32769), the final exit (cut -1 only) what it
          scores below offload_below_q15
  cuts:   [{cut, values, codec {kind, zero_point, shift, signed_codes}, bytes_mean, codec_ratio,
            edge: {runs: "model", file, sha256, input {shape, scale, zero_point}, classes} | {runs: "stages", first_stage}}]
  validation: {n_samples, accuracy, device_only_accuracy, offload_rate, bytes_per_sample,
               bytes_always_offload_per_sample, device_energy_uj_mean, device_only_energy_uj_mean}
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyexit import policy
from tinyexit.errors import TinyexitError

DEFAULT_MAX_OFFLOAD_RATE = 0.30
DEFAULT_MAX_BYTES_FRACTION = 0.30
CODEC_KINDS = ("raw", "lossless", "requant4", "requant2")  # index = tx::codec::Kind
EDGE_MODEL_FILE = "edge_model.tflite"


@dataclass
class Cut:
    """One tensor a device may send, as measured on the validation split."""
    cut: int                     # -1: the model input; k: stage k's features
    values: int                  # int8 values in the tensor
    codec: dict                  # {kind, zero_point, shift, signed_codes}
    bytes: np.ndarray            # per sample, what the firmware sends (the raw input when not smaller)
    edge_pred: np.ndarray        # the edge's class per sample when it gets this cut
    edge: dict                   # what the edge runs (see the module docstring)
    raw_input_bytes: int = 0

    @property
    def codec_ratio(self) -> float:
        return float(self.values / max(float(np.mean(self.bytes)), 1e-9))


@dataclass
class Outcome:
    thresholds: tuple[int, ...]       # per early exit
    cuts: tuple[int | None, ...]      # per early exit: None continue, else the cut index sent
    accuracy: float
    offload_rate: float
    bytes_per_sample: float
    energy_uj_mean: float
    exit_rates: list[float] = field(default_factory=list)
    final_below: int = 0              # the final exit offloads samples it scores below this (0: none)


def codec_params(kind: str = "raw", zero_point: int = 0, shift: int = 0, signed_codes: bool = False) -> dict:
    if kind not in CODEC_KINDS:
        raise TinyexitError(f"unknown codec '{kind}' (known: {', '.join(CODEC_KINDS)})")
    return {"kind": kind, "zero_point": int(zero_point), "shift": int(shift), "signed_codes": bool(signed_codes)}


def setting(manifest: dict, exit_index: int):
    """The harness's OffloadSetting for one early exit of the manifest's offload section."""
    from tinyexit.harness import OffloadSetting

    section = manifest["offload"]
    entry = next(e for e in section["exits"] if e["exit"] == exit_index)
    if entry["cut"] is None:
        return OffloadSetting(False)
    codec = next(c for c in section["cuts"] if c["cut"] == entry["cut"])["codec"]
    return OffloadSetting(True, entry["cut"], CODEC_KINDS.index(codec["kind"]), codec["zero_point"], codec["shift"],
                          codec["signed_codes"], entry["offload_below_q15"])


class EdgeModel:
    """A plain int8 `.tflite` the edge runs on a device's raw input, exactly as the edge worker runs it
    (tinyexit.edge.worker: requantized from the device's input quantization; LiteRT's reference kernels here,
    bit-exact with TFLite Micro on int8 models and much faster than its Python interpreter)."""

    def __init__(self, path: str | Path):
        from tinyexit.tflite_graph import Graph

        self.path = Path(path)
        if not self.path.is_file():
            raise TinyexitError(f"edge model {self.path} not found")
        g = Graph(self.path.read_bytes(), str(self.path))
        if len(g.inputs) != 1:
            raise TinyexitError(f"{self.path}: the edge model must have one input")
        self.input = g.tensors[g.inputs[0]].describe()
        if self.input["dtype"] != "int8" or self.input["scale"] is None:
            raise TinyexitError(f"{self.path}: the edge model must take an int8 quantized input")
        self.classes = int(np.prod(g.tensors[g.outputs[0]].shape))  # the worker answers from output 0

    def describe_input(self) -> dict:
        return {"shape": [int(v) for v in self.input["shape"]], "scale": float(self.input["scale"]),
                "zero_point": int(self.input["zero_point"])}

    def predict(self, x_q: np.ndarray, device_input: dict) -> np.ndarray:
        """Classes for int8 samples in the device's input quantization."""
        from tinyexit.edge.worker import _EdgeNetwork

        net = _EdgeNetwork(self.path, device_input, "litert-ref")
        shape = device_input["shape"]
        return np.array([net(np.asarray(v, np.int8).reshape(shape))[0] for v in x_q])


def stage_outputs(manifest: dict, x_q: np.ndarray, progress: bool = False):
    """Every exit's int8 logits and every cut tensor (stage k's features, k < last) of every sample, by
    TFLite Micro's interpreter: ([logits (N, C) per exit], {k: features (N, values)})."""
    from tinyexit.reference import _progress, load_stages

    stages = load_stages(manifest)
    logits = [np.zeros((len(x_q), e["classes"]), np.int8) for e in manifest["exits"]]
    features = {k: [] for k in range(len(stages) - 1)}
    for n in _progress(range(len(x_q)), progress, "stages"):
        value = x_q[n:n + 1]
        for k, stage in enumerate(stages):
            outs = stage(value)
            for e in manifest["exits"]:
                if e["stage"] == k:
                    logits[e["index"]][n] = outs[e["output"]].reshape(-1)
            if k < len(stages) - 1:
                features[k].append(outs[0].reshape(-1))
            value = outs[0]
    return logits, {k: np.stack(v) for k, v in features.items()}


def _params(codec: dict):
    from tinyexit.edge import codec as codec_lib

    return codec_lib.Params.from_dict(codec)


def encoded(codec: dict, tensors: np.ndarray) -> list[bytes]:
    """Each tensor as the firmware encodes it (tinyexit.edge.codec is byte-identical with tx::codec)."""
    from tinyexit.edge import codec as codec_lib

    p = _params(codec)
    return [codec_lib.encode(p, t) for t in np.asarray(tensors, np.int8).reshape(len(tensors), -1)]


def decoded(codec: dict, streams: list[bytes], values: int) -> np.ndarray:
    from tinyexit.edge import codec as codec_lib

    p = _params(codec)
    return np.stack([codec_lib.decode(p, s, values)[0] for s in streams])


def choose_codec(tensors: np.ndarray, zero_point: int, max_bytes: float | None = None) -> dict:
    """The codec helper's rule (tinyexit.edge.codec.choose: lossless for low-entropy maps, else 4- or 2-bit
    requantization) measured on these validation tensors."""
    from tinyexit.edge import codec as codec_lib

    return codec_lib.choose(codec_lib.measure(tensors, zero_point, max_samples=300), max_bytes).to_dict()


def remaining_stages_predict(manifest: dict, first_stage: int, tensors: np.ndarray) -> np.ndarray:
    """The final exit's class when the edge runs stages first_stage.. (no early exits) on these features."""
    from tinyexit.reference import load_stages

    stages = load_stages(manifest)[first_stage:]
    final = manifest["exits"][-1]
    shape = manifest["stages"][first_stage]["inputs"][0]["shape"]
    out = []
    for t in tensors:
        value = np.asarray(t, np.int8).reshape(shape)
        for stage in stages:
            outs = stage(value)
            value = outs[0]
        out.append(int(np.argmax(outs[final["output"]].reshape(-1))))
    return np.array(out)


def cuts_for(manifest: dict, x_q: np.ndarray, logits: list[np.ndarray], features: dict, edge: EdgeModel | None,
             edge_file: str | None = None, edge_sha256: str | None = None, codecs: dict | None = None) -> list[Cut]:
    """The candidate cuts: the raw input (when an edge model runs it) and each stage's features (the edge runs
    the remaining stages; answer = the final exit, on the decoded features when the codec is lossy).
    `codecs`: {cut: codec dict} to force, else the codec helper's choice."""
    input_bytes = int(x_q[0].size)
    out = []
    final_pred = np.argmax(logits[-1], axis=1)
    raw_input = None
    if edge is not None:
        codec = (codecs or {}).get(-1, codec_params("raw", manifest["input"]["zero_point"]))
        sent = np.minimum([len(s) for s in encoded(codec, x_q)], input_bytes)
        raw_input = Cut(-1, input_bytes, codec, sent, edge.predict(x_q, manifest["input"]),
                        {"runs": "model", "file": edge_file or EDGE_MODEL_FILE, "sha256": edge_sha256 or "",
                         "input": edge.describe_input(), "classes": edge.classes}, input_bytes)
        out.append(raw_input)
    for k, tensors in features.items():
        zp = manifest["stages"][k]["outputs"][0]["zero_point"]
        codec = (codecs or {}).get(k) or choose_codec(tensors, zp, input_bytes - 1)
        streams = encoded(codec, tensors)
        sent = np.array([len(s) for s in streams])
        # the firmware sends the raw input instead of an encoding that is not smaller: the edge model answers those
        bigger = sent >= input_bytes
        if bigger.all() or (bigger.any() and raw_input is None):
            continue
        if codec["kind"] in ("raw", "lossless"):
            pred = final_pred.copy()
        else:  # lossy: the remaining stages see the decoded features
            pred = remaining_stages_predict(manifest, k + 1, decoded(codec, streams, tensors.shape[1]))
        if bigger.any():
            pred[bigger] = raw_input.edge_pred[bigger]
        out.append(Cut(k, int(tensors.shape[1]), codec, np.minimum(sent, input_bytes), pred,
                       {"runs": "stages", "first_stage": k + 1}, input_bytes))
    return out


def simulate(manifest: dict, scores: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray, thresholds, choice,
             cuts: list[Cut], stage_energy_uj: np.ndarray, link, final_below: int = 0, arrays: bool = False):
    """One candidate, sample by sample as the firmware decides. scores: (class, q15 score) per exit;
    thresholds: per exit (the final's unused); choice: per exit None or the index of the cut it sends (an early
    exit sends what it does not take; the final exit, cut -1 only, what it scores below `final_below`);
    stage_energy_uj: cumulative device energy to the end of each stage. arrays: also the per-sample arrays."""
    n = len(y)
    undecided = np.ones(n, bool)
    correct = np.zeros(n, bool)
    energy = np.zeros(n)
    sent = np.zeros(n)
    offloaded = np.zeros(n, bool)
    answered_by = np.full(n, -1)  # the exit that answered on the device (-1: offloaded)
    rates = []
    for e in manifest["exits"]:
        cls, score = scores[e["index"]]
        c = None if choice[e["index"]] is None else cuts[choice[e["index"]]]
        here = undecided & (True if e["final"] else score >= thresholds[e["index"]])
        if e["final"] and c is not None:
            here &= score >= final_below
        correct[here] = cls[here] == y[here]
        energy[here] = stage_energy_uj[e["stage"]]
        answered_by[here] = e["index"]
        rates.append(float(here.mean()))
        undecided &= ~here
        if c is not None:
            go = undecided
            correct[go] = c.edge_pred[go] == y[go]
            sent[go] = c.bytes[go]
            energy[go] = stage_energy_uj[e["stage"]] + link.energy_uj(c.bytes[go])
            offloaded |= go
            undecided = np.zeros(n, bool)
    out = Outcome(tuple(int(t) for t in thresholds[:-1]), tuple(choice), float(correct.mean()),
                  float(offloaded.mean()), float(sent.mean()), float(energy.mean()), rates,
                  final_below if choice[-1] is not None else 0)
    if arrays:
        return out, {"correct": correct, "energy": energy, "sent": sent, "offloaded": offloaded, "exit": answered_by}
    return out


def _best_final_below(manifest, scores, y, base: dict, cut: Cut, stage_energy_uj, link, max_rate, byte_budget):
    """With everything before the final exit fixed (`base`: a simulation without final offload), the final exit's
    offload threshold that gives the most accuracy within the budgets: samples answered by the final exit, in
    ascending score, go to the edge as the threshold rises. (accuracy, energy mean, below) or None."""
    n = len(y)
    final = manifest["exits"][-1]
    cls, score = scores[final["index"]]
    idx = np.flatnonzero(base["exit"] == final["index"])  # the samples the device's final exit answers
    order = idx[np.argsort(score[idx], kind="stable")]
    sv = score[order]
    gain = (cut.edge_pred[order] == y[order]).astype(np.int64) - (cls[order] == y[order])
    cum_gain = np.r_[0, np.cumsum(gain)]
    cum_bytes = np.r_[0, np.cumsum(cut.bytes[order])]
    base_acc, base_rate = base["correct"].mean(), base["offloaded"].mean()
    base_bytes, base_energy = base["sent"].sum(), base["energy"].sum()
    best = None
    for below in np.unique(np.r_[sv, policy.NEVER]):
        k = int(np.searchsorted(sv, below, "left"))  # offloaded: score < below
        rate, sent = base_rate + k / n, (base_bytes + cum_bytes[k]) / n
        if k == 0 or rate > max_rate + 1e-12 or sent > byte_budget + 1e-9:
            continue
        acc = base_acc + cum_gain[k] / n
        energy = (base_energy + link.energy_uj(cum_bytes[k])) / n
        if best is None or (acc, -energy) > (best[0], -best[1]):
            best = (float(acc), float(energy), int(below))
    return best


def choose(manifest: dict, logits: list[np.ndarray], y: np.ndarray, cuts: list[Cut], stage_instructions: list[float],
           board, link, max_offload_rate: float = DEFAULT_MAX_OFFLOAD_RATE,
           max_bytes_fraction: float = DEFAULT_MAX_BYTES_FRACTION) -> tuple[Outcome, Outcome]:
    """(the chosen candidate, the device-only policy of the manifest) on the validation split."""
    from tinyexit.calibrate import candidates
    from tinyexit.reference import thresholds_of

    y = np.asarray(y)
    scores = [policy.exit_scores(e, logits[e["index"]]) for e in manifest["exits"]]
    stage_energy = np.array([board.energy_uj(c) for c in np.cumsum(stage_instructions)])
    early = [e["index"] for e in manifest["exits"] if not e["final"]]
    input_bytes = int(np.prod(manifest["input"]["shape"]))
    byte_budget = max_bytes_fraction * input_bytes
    none = [None] * len(manifest["exits"])
    device_only = simulate(manifest, scores, y, thresholds_of(manifest), none, cuts, stage_energy, link)
    best = device_only
    # per early exit: continue, or any cut it can send (the input, or its own stage's features); the final
    # exit: the input to an edge model, below a threshold chosen for each candidate
    options = [[None] + [i for i, c in enumerate(cuts) if c.cut in (-1, manifest["exits"][e]["stage"])]
               for e in early]
    final_cut = next((i for i, c in enumerate(cuts) if c.cut == -1 and c.edge.get("runs") == "model"), None)
    grid = candidates([scores[e][1] for e in early]) if early else [()]
    if len(grid) > 400:  # one early exit, many distinct scores: with a final-exit sweep each, a quantile grid
        shared = np.unique(np.quantile(np.array([g[0] for g in grid]), np.linspace(0, 1, 200)).round())
        grid = [(int(t),) * len(early) for t in shared] + [(policy.NEVER,) * len(early)]

    def better(o: Outcome) -> bool:
        return (o.accuracy, -o.energy_uj_mean) > (best.accuracy, -best.energy_uj_mean)

    for choice in itertools.product(*options):
        for t in grid:
            thresholds = list(t) + [0]
            o, arrays = simulate(manifest, scores, y, thresholds, list(choice) + [None], cuts, stage_energy, link,
                                 arrays=True)
            feasible = o.offload_rate <= max_offload_rate + 1e-12 and o.bytes_per_sample <= byte_budget + 1e-9
            if feasible and any(c is not None for c in choice) and better(o):
                best = o
            if final_cut is None or o.offload_rate >= max_offload_rate:
                continue
            found = _best_final_below(manifest, scores, y, arrays, cuts[final_cut], stage_energy, link,
                                      max_offload_rate, byte_budget)
            if found is not None and (found[0], -found[1]) > (best.accuracy, -best.energy_uj_mean):
                best = simulate(manifest, scores, y, thresholds, list(choice) + [final_cut], cuts, stage_energy,
                                link, final_below=found[2])
    return best, device_only


def section(manifest: dict, chosen: Outcome, device_only: Outcome, cuts: list[Cut], board, link, target: str,
            n_samples: int, max_offload_rate: float, max_bytes_fraction: float) -> dict:
    input_bytes = int(np.prod(manifest["input"]["shape"]))
    used = sorted({c for c in chosen.cuts if c is not None})
    exits = []
    for e in manifest["exits"]:
        c = chosen.cuts[e["index"]]
        exits.append({"exit": e["index"], "threshold_q15": 0 if e["final"] else int(chosen.thresholds[e["index"]]),
                      "cut": None if c is None else cuts[c].cut,
                      "offload_below_q15": 0 if c is None else (chosen.final_below if e["final"] else policy.NEVER)})
    return {
        "board": board.name,
        "link": {"name": link.name, "bytes_per_s": link.bytes_per_s, "energy_uj_per_byte": link.energy_uj_per_byte},
        "target": target, "max_offload_rate": max_offload_rate, "max_bytes_fraction": max_bytes_fraction,
        "exits": exits,
        "cuts": [{"cut": cuts[i].cut, "values": cuts[i].values, "codec": cuts[i].codec,
                  "bytes_mean": round(float(np.mean(cuts[i].bytes)), 2), "codec_ratio": round(cuts[i].codec_ratio, 3),
                  "edge": cuts[i].edge} for i in used],
        "validation": {"n_samples": int(n_samples), "accuracy": chosen.accuracy,
                       "device_only_accuracy": device_only.accuracy, "offload_rate": chosen.offload_rate,
                       "bytes_per_sample": chosen.bytes_per_sample, "bytes_always_offload_per_sample": input_bytes,
                       "device_energy_uj_mean": chosen.energy_uj_mean,
                       "device_only_energy_uj_mean": device_only.energy_uj_mean},
    }


def calibrate_offload(export_dir: str | Path, x_q: np.ndarray, y: np.ndarray, edge_model: str | Path | None,
                      board_name: str | None = None, link_name: str | None = None, target: str = "qemu-m4",
                      max_offload_rate: float = DEFAULT_MAX_OFFLOAD_RATE,
                      max_bytes_fraction: float = DEFAULT_MAX_BYTES_FRACTION, progress: bool = True) -> dict:
    """Choose the offload policy on (x_q, y) (the validation split) and write it into the export's manifest;
    the edge model is copied into the export. Returns the section."""
    import shutil

    from tinyexit import boards
    from tinyexit import manifest as mf

    export_dir = Path(export_dir)
    m = mf.read(export_dir)
    board = boards.load(board_name) if board_name else boards.for_target(target)
    if board is None:
        raise TinyexitError(f"no board stands in for {target}: give --board")
    link = board.link(link_name)
    costs = m["cost"].get("instructions", {}).get(target)
    if costs is None:
        from tinyexit.measure import measure_instructions

        costs = measure_instructions(export_dir, target, x_q)
        m["cost"].setdefault("instructions", {})[target] = costs
    logits, features = stage_outputs(m, x_q, progress)
    edge, edge_sha = None, None
    if edge_model is not None:
        edge = EdgeModel(edge_model)
        edge_sha = mf.sha256_file(edge.path)
    cuts = cuts_for(m, x_q, logits, features, edge, EDGE_MODEL_FILE, edge_sha)
    chosen, device_only = choose(m, logits, y, cuts, costs["stage"], board, link, max_offload_rate, max_bytes_fraction)
    m["offload"] = section(m, chosen, device_only, cuts, board, link, target, len(y), max_offload_rate,
                           max_bytes_fraction)
    if edge is not None and edge.path.resolve() != (export_dir / EDGE_MODEL_FILE).resolve():
        from tinyexit import atomic

        atomic.write_bytes(export_dir / EDGE_MODEL_FILE, edge.path.read_bytes())
    mf.save(m)
    return m["offload"]
