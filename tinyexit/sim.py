"""Running inputs through a firmware build over the protocol, and summarising what came back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyexit.errors import TinyexitError
from tinyexit.policy import NEVER


def check_inputs(x: np.ndarray, input_bytes: int) -> None:
    if x.dtype != np.int8:
        raise TinyexitError(f"inputs are {x.dtype}; the model takes int8 (quantize them first)")
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != input_bytes:
        raise TinyexitError(f"inputs have shape {x.shape}; each must hold {input_bytes} int8 values")


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """An output DEQUANTIZE as TFLite Micro computes it: float32(double(scale) * (q - zero_point))."""
    return (np.float64(np.float32(scale)) * (q.astype(np.int64) - zero_point)).astype(np.float32)


def _check_samples(info: dict, x) -> tuple[list[np.ndarray], int]:
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    if len(xs) != len(info["input_sizes"]):
        raise TinyexitError(f"the model takes {len(info['input_sizes'])} inputs; {len(xs)} given")
    for a, size in zip(xs, info["input_sizes"]):
        check_inputs(a, size)
    n = len(xs[0])
    if any(len(a) != n for a in xs):
        raise TinyexitError(f"the inputs hold different numbers of samples ({', '.join(str(len(a)) for a in xs)})")
    return xs, n


def _sample(xs: list[np.ndarray], i: int):
    return [a[i] for a in xs] if len(xs) > 1 else xs[0][i]


NO_EXIT_SAMPLES = 20  # the no-exit pass (each stage's count, every early exit off) runs on the first ones
PROTOCOLS = ("batch", "serial")  # how samples reach the firmware: BATCH through files, or one INFER each
CHUNK_SECONDS = 2.0  # a BATCH request's length once the pace is known (the progress bar moves per request)
FIRST_CHUNK, MAX_CHUNK = 4, 1024

_noted: set[str] = set()


def _note_once(text: str) -> None:
    import sys

    if text not in _noted:
        _noted.add(text)
        print(f"tinyexit: note: {text}", file=sys.stderr)


class Sampler:
    """Runs samples on one connected Device: through BATCH (inputs and results in files, one request per chunk)
    where the device shares files with this host (host build, QEMU) and protocol is "batch", else one INFER
    per sample over the serial link (boards; --protocol serial; firmware built before BATCH, with a note).
    Either way a sample runs the same firmware code in the same timed region: the results are identical."""

    def __init__(self, dev, protocol: str = "batch"):
        if protocol not in PROTOCOLS:
            raise TinyexitError(f"unknown protocol '{protocol}' (one of: {', '.join(PROTOCOLS)})")
        self.dev = dev
        self.batch = protocol == "batch" and dev.files is not None
        self.seconds_per_sample: float | None = None
        self._loaded = None

    def run(self, xs: list[np.ndarray], with_output: bool = True, all_outputs: bool = False,
            profile_first: bool = False, serial_first: bool = False, bar=None) -> list:
        """Every sample of xs (one array per model input), in order: one harness.Inference each.
        profile_first: the first sample goes through PROFILE (per-layer cycles); serial_first: the first one
        goes over the serial link whatever the protocol (see _no_exit_pass)."""
        n = len(xs[0])
        runs = []
        if (profile_first or serial_first) and n:
            runs += self._run(xs, 0, 1, with_output, all_outputs, profile_first, bar, serial_first)
        runs += self._run(xs, len(runs), n - len(runs), with_output, all_outputs, False, bar)
        return runs

    def _run(self, xs, first: int, count: int, with_output: bool, all_outputs: bool, profile: bool, bar,
             serial: bool = False) -> list:
        from tinyexit.harness import NO_BATCH, DeviceError

        runs = []
        if self.batch and count and not serial:
            try:
                return self._batch(xs, first, count, with_output, all_outputs, profile, bar)
            except DeviceError as err:
                if err.code not in NO_BATCH:
                    raise
                self.batch = False
                why = "built before batch mode: rebuild it" if err.code == 3 else "its port has no files"
                _note_once(f"the firmware cannot run BATCH ({why}); running one INFER per sample over the serial link")
        for i in range(first, first + count):
            runs.append(self.dev.infer(_sample(xs, i), with_output=with_output, profile=profile,
                                       all_outputs=all_outputs))
            if bar is not None:
                bar.update(1)
        return runs

    def _batch(self, xs, first: int, count: int, with_output: bool, all_outputs: bool, profile: bool, bar) -> list:
        import time

        if self._loaded is not xs:
            self.dev.write_batch_inputs(xs)
            self._loaded = xs
        runs = []
        while len(runs) < count:
            pace = self.seconds_per_sample
            size = FIRST_CHUNK if pace is None else int(np.clip(CHUNK_SECONDS / max(pace, 1e-6), 1, MAX_CHUNK))
            size = min(size, count - len(runs))
            start = time.perf_counter()
            runs += self.dev.batch(first + len(runs), size, with_output, profile, all_outputs, pace)
            self.seconds_per_sample = (time.perf_counter() - start) / size
            if bar is not None:
                bar.update(size)
        return runs


def _infer_each(sampler: Sampler, xs: list[np.ndarray], every: bool, bar) -> list:
    """Every sample through the firmware's own exit policy, in order: one harness.Inference each."""
    return sampler.run(xs, all_outputs=every, bar=bar)


def _no_exit_pass(sampler: Sampler, xs: list[np.ndarray], info: dict, profile_layers: bool) -> list:
    """The no-exit path on the first samples: every early exit switched off (the device's policy is left so).
    profile_layers: the first one goes through PROFILE. That first one, through every stage, always goes over
    the serial link: the stack high-water mark INFO reports afterwards then includes the serial request's
    frames, as on a board (BATCH's are shallower), and is the same in batch and serial runs."""
    early = {e: NEVER for e in range(info["exits"] - 1)}
    if early:
        sampler.dev.set_policy(early)
    return sampler.run([a[:NO_EXIT_SAMPLES] for a in xs], with_output=False, profile_first=profile_layers,
                       serial_first=True)


def _summarise(info: dict, label: str, y, runs: list, full_runs: list, outputs: list[dict] | None, every: bool,
               profile_layers: bool) -> tuple[dict, dict]:
    n = len(runs)
    pred = np.array([r.predicted_class for r in runs], np.int64)
    exits = np.array([r.exit for r in runs], np.int64)
    cycles = np.array([sum(r.stage_cycles) for r in runs], np.int64)
    logits = [r.output for r in runs]
    full = [sum(r.stage_cycles) for r in full_runs]
    per_stage = [r.stage_cycles for r in full_runs]
    layer_cycles = next((r.layer_cycles for r in reversed(full_runs) if r.layer_cycles is not None), None)
    summary = {
        "n": n, "target": label, "cycle_unit": info["cycle_unit"],
        "accuracy": float((pred == y).mean()) if y is not None else None,
        "exit_histogram": np.bincount(exits, minlength=info["exits"]).tolist(),
        "mean_instructions": float(cycles.mean()) if n else 0.0,
        "macs_per_inference": int(info["macs"]),
        "instructions_per_mac": float(np.mean(full) / info["macs"]) if full else None,
        "instructions_no_exit": float(np.mean(full)) if full else None,
        "stage_instructions": np.mean(per_stage, axis=0).tolist() if per_stage else None,  # each stage, no exits
        "peak_activation_bytes": int(info["arena_bytes"]),
        "energy_uj": None,
        "board": None,
    }
    result = {"pred": pred, "exit": exits, "instructions": cycles, "output": np.stack(logits) if logits else np.zeros((0,))}
    if every:
        for j, desc in enumerate(outputs):
            values = [r.outputs[j] for r in runs]
            q = np.stack(values).reshape(n, *desc["shape"][1:]) if values else np.zeros((0, *desc["shape"][1:]), np.int8)
            dq = desc.get("dequantize")
            result[f"output_{j}"] = dequantize(q, dq["scale"], dq["zero_point"]) if dq else q
    if profile_layers:
        result["layer_cycles"] = np.asarray(layer_cycles or [], np.int64)
    return result, summary


def _progress_bar(n: int, label: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=n, desc=f"{label} firmware", unit="sample", disable=not progress or n < 50, leave=False)


def run_samples(dev, x: np.ndarray | list[np.ndarray], y: np.ndarray | None, label: str, progress: bool = True,
                profile_layers: bool = False, outputs: list[dict] | None = None,
                protocol: str = "batch") -> tuple[dict, dict]:
    """Every input through a connected Device (harness.Device) with the firmware's own exit policy, then
    the no-exit path on the first samples (every early exit switched off: the device's policy is left
    that way). profile_layers: the first no-exit sample goes through PROFILE, giving per-layer cycles.
    x: (N, ...) or, for a model with several inputs, one such array per input. outputs: the model's outputs
    (codegen.describe_outputs) to collect every one of them as `output_<i>` in the result (one-stage models),
    dequantized where the model ends in DEQUANTIZE. protocol: "batch" (BATCH requests where the device shares
    files with this host, else one INFER each) or "serial" (one INFER each); the results are the same."""
    info = dev.info()
    xs, n = _check_samples(info, x)
    every = outputs is not None and info["stages"] == 1
    sampler = Sampler(dev, protocol)
    with _progress_bar(n, label, progress) as bar:
        runs = _infer_each(sampler, xs, every, bar)
    full_runs = _no_exit_pass(sampler, xs, info, profile_layers)
    return _summarise(info, label, y, runs, full_runs, outputs, every, profile_layers)


def run_shard(target: str, binary: Path, xs: list[np.ndarray], every: bool, no_exit_xs: list[np.ndarray] | None,
              profile_layers: bool, on_progress=None, protocol: str = "batch") -> tuple[dict, list, list, dict]:
    """One instance of the firmware over one shard of the inputs: a module-level function on plain picklable
    data, so any executor (threads, processes, a cluster) can run it. xs: one array per model input, the shard's
    samples; every: collect every output of the (one-stage) model; no_exit_xs: the samples of the no-exit pass
    (None: not this shard); on_progress(k): called as samples complete (local runs only; None elsewhere);
    protocol: see run_samples. Returns (INFO before, harness.Inference per sample, the no-exit pass's Inferences, INFO after)."""
    from tinyexit.harness import firmware

    progress = on_progress or (lambda k: None)
    with firmware(target, binary) as dev:
        info = dev.info()
        part, _ = _check_samples(info, xs)
        sampler = Sampler(dev, protocol)
        runs = _infer_each(sampler, part, every and info["stages"] == 1, _Counter(progress))
        full_runs = _no_exit_pass(sampler, no_exit_xs, info, profile_layers) if no_exit_xs is not None else []
        return info, runs, full_runs, dev.info()


class _Counter:
    """A tqdm-like update(k) over a plain callback."""

    def __init__(self, callback):
        self.update = callback


def _balanced_shards(n: int, jobs: int, extra_last: int) -> list[np.ndarray]:
    """`jobs` contiguous shards of range(n) with equal work when the last one also runs `extra_last` samples
    (the no-exit pass): it gets that many fewer, so no instance waits on it."""
    k = np.arange(1, jobs)
    bounds = np.clip(np.round(k * (n + extra_last) / jobs).astype(int), k, n - jobs + k)  # none empty (jobs <= n)
    return np.split(np.arange(n), bounds)


def run_parallel(target: str, binary: Path, x: np.ndarray | list[np.ndarray], y: np.ndarray | None, label: str,
                 jobs: int | None = None, progress: bool = True, profile_layers: bool = False,
                 outputs: list[dict] | None = None, executor=None, protocol: str = "batch") -> tuple[dict, dict, list[dict]]:
    """run_samples over `jobs` instances of the same firmware (QEMU or host processes; default: the cores
    available), each on a contiguous shard of the inputs, merged in input order. Counts per sample are the
    same as with one instance (deterministic under -icount). The last instance also runs the no-exit pass on
    the first samples, so the summary matches one job's. executor: runs the shards, any object whose
    `map(fn, list_of_argument_tuples)` returns [fn(*args) ...] in order (default: tinyexit.cluster.LocalExecutor,
    threads here, with a progress bar per sample; elsewhere the bar moves per shard); protocol: see run_samples.
    Returns (result, summary, each instance's INFO after its run)."""
    from tinyexit.cluster import LocalExecutor, available_cores

    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    n = len(xs[0])
    jobs = max(1, min(jobs or getattr(executor, "workers", None) or available_cores(), n))
    no_exit_xs = [a[:NO_EXIT_SAMPLES] for a in xs]
    shards = _balanced_shards(n, jobs, len(no_exit_xs[0]))
    every = outputs is not None
    with _progress_bar(n, label, progress) as bar:
        local = executor is None or getattr(executor, "local", False)  # threads here: the bar moves per sample
        tasks = [(target, Path(binary), [a[idx] for a in xs], every, no_exit_xs if k == jobs - 1 else None,
                  profile_layers, bar.update if local else None, protocol) for k, idx in enumerate(shards)]
        done = (executor or LocalExecutor(jobs)).map(run_shard, tasks)
        if not local:
            bar.update(n)
    info = done[0][0]
    runs = [r for _, shard_runs, _, _ in done for r in shard_runs]
    every = every and info["stages"] == 1
    result, summary = _summarise(info, label, y, runs, done[-1][2], outputs, every, profile_layers)
    return result, summary, [after for *_, after in done]


def add_energy(summary: dict, board) -> None:
    """energy_uj per mean inference from the board's datasheet power (tinyexit.boards), in place."""
    if board is None:
        return
    summary["board"] = board.name
    summary["energy_uj"] = board.energy_uj(summary["mean_instructions"])
    if summary["instructions_no_exit"]:
        summary["energy_uj_no_exit"] = board.energy_uj(summary["instructions_no_exit"])


def add_memory(summary: dict, fw, build_dir: Path, stack_bytes: int | None) -> None:
    """The build's memory report with the measured stack, in the summary and back into build.json."""
    from tinyexit.firmware_build import with_stack, write_memory_report

    if fw.memory:
        memory = with_stack(fw.memory, stack_bytes)
        write_memory_report(Path(build_dir) / "build.json", memory)
        summary["memory"] = memory
    summary["stack_bytes"] = stack_bytes


def simulate(model: str | Path, target: str, x: np.ndarray | list[np.ndarray], y: np.ndarray | None,
             build_dir: Path, progress: bool = True, board=None, jobs: int | None = None,
             protocol: str = "batch", executor=None) -> tuple[dict, dict]:
    """Build the firmware for target, run the inputs through it (run_parallel over `jobs` instances, default
    the cores available or the executor's workers; every output of a one-stage model collected); board
    (tinyexit.boards.Board) prices the counts in energy; protocol: see run_samples; executor: see run_parallel
    (e.g. a tinyexit.cluster executor)."""
    from tinyexit.firmware_build import build

    fw = build(model, target, build_dir)
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    if len(xs) != len(fw.input_sizes):
        raise TinyexitError(f"the model takes {len(fw.input_sizes)} inputs; {len(xs)} given")
    for a, size in zip(xs, fw.input_sizes):
        check_inputs(a, size)
    result, summary, after = run_parallel(target, fw.binary, x, y, target, jobs, progress, outputs=fw.outputs,
                                          executor=executor, protocol=protocol)
    # the high-water mark after the inferences, the deepest over the instances; 0: unknown
    stack = max(info.get("stack_used") or 0 for info in after) or None
    add_memory(summary, fw, build_dir, stack)
    add_energy(summary, board)
    return result, summary


def table(s: dict) -> str:
    rows = [("samples", s["n"]), ("accuracy", f"{s['accuracy']:.2%}" if s["accuracy"] is not None else "-"),
            ("exit histogram", s["exit_histogram"]),
            (f"mean {s['cycle_unit']} per inference", f"{s['mean_instructions']:,.0f}"),
            (f"{s['cycle_unit']} without exits", f"{s['instructions_no_exit']:,.0f}" if s["instructions_no_exit"] else "-"),
            ("MACs per inference (all stages)", f"{s['macs_per_inference']:,}"),
            (f"{s['cycle_unit']} per MAC (no exit)", f"{s['instructions_per_mac']:.2f}" if s["instructions_per_mac"] else "-"),
            ("peak activation bytes", f"{s['peak_activation_bytes']:,}")]
    if "stack_bytes" in s:
        rows.append(("stack high-water mark", f"{s['stack_bytes']:,} bytes" if s["stack_bytes"] else "not measured"))
    if s.get("memory"):
        m = s["memory"]
        rows.append(("RAM / flash (weights)", f"{m['ram_bytes']:,} / {m['flash_bytes']:,} ({m['weight_flash_bytes']:,}) bytes"))
    if s.get("energy_uj") is not None:
        rows.append((f"energy per inference ({s['board']}, proxy)", f"{s['energy_uj']:,.2f} uJ"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
