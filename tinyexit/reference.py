"""Reference staged inference on the exported stages.

TFLite Micro's own Python interpreter (`tflite-micro`) is the reference the firmware must match bit for
bit. LiteRT (TFLite) can run the same stages for comparison: its default kernels round differently from
TFLite Micro's; its BUILTIN_REF kernels should not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyexit import manifest as mf
from tinyexit import policy
from tinyexit.errors import TinyexitError

BACKENDS = ("tflm", "litert", "litert-ref")


def quantize_input(manifest: dict, x: np.ndarray) -> np.ndarray:
    """Float model inputs (after the manifest's preprocessing) -> the int8 tensor stage 0 takes."""
    inp = manifest["input"]
    q = np.round(np.asarray(x, np.float64) / inp["scale"]) + inp["zero_point"]
    return np.clip(q, -128, 127).astype(np.int8)


class StageInterpreter:
    """One stage `.tflite` in one backend, invoked sample by sample (batch size 1, as on a device)."""

    def __init__(self, model_bytes: bytes, backend: str = "tflm", name: str = "stage"):
        self.backend = backend
        if backend == "tflm":
            from tflite_micro.python.tflite_micro import runtime

            from tinyexit.tflite_graph import Graph

            graph = Graph(model_bytes, name)
            # room for every activation at once plus TFLM's own bookkeeping: generous, never too small
            arena = 2 * sum(t.nbytes for t in graph.tensors if not t.is_constant) + 64 * 1024
            try:
                self._it = runtime.Interpreter.from_bytes(model_bytes, arena_size=arena)
            except Exception as err:  # the binding raises RuntimeError with TFLM's log
                raise TinyexitError(f"{name}: TFLite Micro cannot load it ({str(err).strip()[:200]})") from None
            self.n_outputs = len(graph.outputs)
        elif backend in ("litert", "litert-ref"):
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            kind = OpResolverType.BUILTIN_REF if backend == "litert-ref" else OpResolverType.AUTO
            self._it = Interpreter(model_content=model_bytes, experimental_op_resolver_type=kind)
            self._it.allocate_tensors()
            # LiteRT lists outputs in the subgraph's order too
            self._outs = [d["index"] for d in self._it.get_output_details()]
            self.n_outputs = len(self._outs)
        else:
            raise TinyexitError(f"unknown backend '{backend}' (known: {', '.join(BACKENDS)})")

    def __call__(self, x: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
        """x: one sample with its batch dimension (a list of them for a model with several inputs); returns
        every output (with batch dimension)."""
        xs = x if isinstance(x, (list, tuple)) else [x]
        if self.backend == "tflm":
            for i, value in enumerate(xs):  # TFLM may reuse the input's memory: set it before every invoke
                self._it.set_input(value, i)
            self._it.invoke()
            return [np.array(self._it.get_output(i)) for i in range(self.n_outputs)]
        for detail, value in zip(self._it.get_input_details(), xs):
            self._it.set_tensor(detail["index"], value)
        self._it.invoke()
        return [np.array(self._it.get_tensor(i)) for i in self._outs]


def load_stages(manifest: dict, backend: str = "tflm") -> list[StageInterpreter]:
    return [StageInterpreter(mf.stage_path(manifest, s).read_bytes(), backend, s["file"])
            for s in manifest["stages"]]


def all_exit_logits(manifest: dict, x_q: np.ndarray, backend: str = "tflm", progress: bool = False) -> list[np.ndarray]:
    """Run every stage on every sample; int8 logits of each exit, [(N, C) per exit]."""
    stages = load_stages(manifest, backend)
    logits = [np.zeros((len(x_q), e["classes"]), np.int8) for e in manifest["exits"]]
    for n in _progress(range(len(x_q)), progress, f"{backend} reference"):
        feature = x_q[n:n + 1]
        for k, stage in enumerate(stages):
            outs = stage(feature)
            for e in manifest["exits"]:
                if e["stage"] == k:
                    logits[e["index"]][n] = outs[e["output"]].reshape(-1)
            feature = outs[0]
    return logits


@dataclass
class StagedResult:
    exit: np.ndarray  # (N,) index of the exit taken
    pred: np.ndarray  # (N,) class
    confidence_q15: np.ndarray  # (N,) the policy's Q15 score at the exit taken
    macs: np.ndarray  # (N,) MACs spent


def thresholds_of(manifest: dict) -> list[int]:
    """Integer threshold per exit (the final exit always takes the sample)."""
    return [policy.NEVER if e["policy"] is None and not e["final"] else
            (0 if e["final"] else int(e["policy"]["threshold_q15"])) for e in manifest["exits"]]


def decide(manifest: dict, logits: list[np.ndarray], thresholds_q15: list[int] | None = None,
           kind: str | None = None) -> StagedResult:
    """Apply the exit policy in exit order to precomputed logits of every exit (what the firmware does);
    `kind` overrides the manifest's policy kinds."""
    thresholds_q15 = thresholds_of(manifest) if thresholds_q15 is None else thresholds_q15
    n = len(logits[0])
    taken = np.full(n, -1)
    pred = np.zeros(n, np.int64)
    conf = np.zeros(n, np.int64)
    for e in manifest["exits"]:
        cls, c = policy.exit_scores(e, logits[e["index"]], kind)
        go = (taken < 0) & ((c >= thresholds_q15[e["index"]]) | e["final"])
        taken[go], pred[go], conf[go] = e["index"], cls[go], c[go]
    cost = np.asarray(manifest["cost"]["macs_to_exit"])
    return StagedResult(taken, pred, conf, cost[[manifest["exits"][i]["stage"] for i in taken]])


def staged_inference(manifest: dict, x_q: np.ndarray, backend: str = "tflm", progress: bool = False) -> StagedResult:
    """Truly staged: run stage k, test its exit, stop or go on, as the firmware does, sample by sample."""
    stages = load_stages(manifest, backend)
    thresholds = thresholds_of(manifest)
    by_stage = {e["stage"]: e for e in manifest["exits"]}
    cost = manifest["cost"]["macs_to_exit"]
    n = len(x_q)
    res = StagedResult(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64))
    for i in _progress(range(n), progress, "staged inference"):
        feature = x_q[i:i + 1]
        for k, stage in enumerate(stages):
            outs = stage(feature)
            e = by_stage[k]
            cls, conf = policy.exit_scores(e, outs[e["output"]].reshape(1, -1))
            if e["final"] or conf[0] >= thresholds[e["index"]]:
                res.exit[i], res.pred[i], res.confidence_q15[i], res.macs[i] = e["index"], cls[0], conf[0], cost[k]
                break
            feature = outs[0]
    return res


def float_exit_logits(model, x: np.ndarray) -> list[np.ndarray]:
    """The float Keras model's logits per exit, for comparison with the int8 stages."""
    from tinyexit.train import predict_logits

    return predict_logits(model, x)


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="sample", leave=False)
