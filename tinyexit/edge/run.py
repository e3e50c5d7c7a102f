"""`tinyexit edge run`: a fleet of firmware instances (host builds or QEMU) bridged to the edge service over MQTT.

Each device is one firmware process speaking the serial protocol (tinyexit.harness) and one MQTT client
(tinyexit.edge.client.EdgeClient) with its own device id. It takes a consecutive chunk of the inputs (streams stay
in order, as a sensor's would) and runs them twice:
1. device only: the manifest's own exit policy, every stage on the device (`tinyexit sim`'s result);
2. cascade: the manifest's `offload` policy (SET_POLICY + SET_OFFLOAD, INFER with may-offload). An offloaded
   sample's encoded cut goes to the edge as a request; the edge's (or its cache's) class answers it. No valid reply
   by the deadline, an error reply or no broker: the device finishes the sample itself (RESUME: the stages after
   the cut), a fallback, counted; its instructions are added to the sample's cost.
Device energy = the board's energy proxy for the instructions counted by the firmware (the encoding included)
+ the link's energy per payload byte (boards/*.yaml links). edge_only_accuracy: every sample's raw input through
the edge's own model code (tinyexit.edge.worker, the requantization included), locally, so it does not fill the
edge cache the cascade is measured with.

`bridge()` is the same loop for one real board on a serial port (`tinyexit bridge`).
"""

from __future__ import annotations

import json
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyexit.errors import TinyexitError

REPORT = "edge_report.json"
PLOT = "edge_accuracy_bytes.png"


@dataclass
class DeviceLog:
    """Per sample, in input order (filled by each device's thread for its chunk)."""
    n: int
    device_cls: np.ndarray = None
    device_instr: np.ndarray = None
    cascade_cls: np.ndarray = None
    cascade_instr: np.ndarray = None
    score0: np.ndarray = None          # cascade pass: the Q15 score of the exit the device stopped at (the plot's sweep)
    exit0_cls: np.ndarray = None       # ... and that exit's class
    offloaded: np.ndarray = None
    cut: np.ndarray = None
    sent_bytes: np.ndarray = None
    cut_values: np.ndarray = None
    encode_instr: np.ndarray = None
    source: list = None                # "device" | "edge" | "cache" | "fallback"
    errors: list = field(default_factory=list)

    def __post_init__(self):
        z = lambda dtype=np.int64: np.zeros(self.n, dtype)  # noqa: E731
        self.device_cls, self.device_instr, self.cascade_cls, self.cascade_instr = z(), z(), z(), z()
        self.score0, self.exit0_cls, self.sent_bytes, self.cut_values, self.encode_instr = z(), z(), z(), z(), z()
        self.offloaded, self.cut = z(bool), np.full(self.n, -2)
        self.source = ["device"] * self.n


def codec_params_bytes(section: dict, cut: int, codec: int) -> bytes:
    """The request's codec parameters (tinyexit/edge/__init__.py): empty for raw, else zero point, shift, flags."""
    if codec == 0:
        return b""
    entry = next((c for c in section["cuts"] if c["cut"] == cut), None)
    if entry is None:
        raise TinyexitError(f"the device sent cut {cut}, which the manifest's offload section does not describe")
    c = entry["codec"]
    return struct.pack("<bbB", c["zero_point"], c["shift"], int(c["signed_codes"]))


def serve_one_sample(dev, client, x, section: dict, log: DeviceLog, i: int) -> None:
    """The cascade for one sample on one device: INFER (may offload), the edge's answer, else RESUME."""
    r = dev.infer(x, with_output=False, may_offload=True)
    log.cascade_instr[i] = sum(r.stage_cycles)
    log.exit0_cls[i], log.score0[i] = r.predicted_class, r.confidence_q15
    if r.offload is None:
        log.cascade_cls[i] = r.predicted_class
        return
    o = r.offload
    log.offloaded[i], log.cut[i], log.sent_bytes[i] = True, o.cut, len(o.data)
    log.cut_values[i], log.encode_instr[i] = o.values, o.encode_cycles
    reply, reason = client.request(o.data, o.cut, o.codec, codec_params_bytes(section, o.cut, o.codec)) \
        if client is not None else (None, "no edge")
    if reply is not None:
        from tinyexit.edge import protocol

        log.cascade_cls[i] = reply.cls
        log.source[i] = protocol.SOURCE_NAMES.get(reply.source, "edge")
        return
    back = dev.resume(with_output=False)  # the device's own answer: the stages after the cut
    log.cascade_cls[i] = back.predicted_class
    log.cascade_instr[i] = sum(back.stage_cycles)
    log.source[i] = "fallback"
    log.errors.append(reason)


def configure(dev, m: dict) -> None:
    """The offload policy of the manifest on a device: thresholds and per-exit offload settings."""
    from tinyexit import offload

    section = m["offload"]
    early = {e["exit"]: e["threshold_q15"] for e in section["exits"] if not m["exits"][e["exit"]]["final"]}
    if early:
        dev.set_policy(early)
    dev.set_offload({e["exit"]: offload.setting(m, e["exit"]) for e in section["exits"]})


def run_device(dev, client, m: dict, x: np.ndarray, chunk, log: DeviceLog, tick=lambda: None) -> None:
    """One device's two passes over its samples: device only (the manifest's exit policy), then the cascade."""
    from tinyexit.harness import OffloadSetting
    from tinyexit.reference import thresholds_of

    early = {e["index"]: thresholds_of(m)[e["index"]] for e in m["exits"] if not e["final"]}
    if early:
        dev.set_policy(early)
    dev.set_offload({e["index"]: OffloadSetting(False) for e in m["exits"]})  # a board may hold an earlier setting
    for i in chunk:  # 1. device only
        r = dev.infer(x[i], with_output=False)
        log.device_cls[i], log.device_instr[i] = r.predicted_class, sum(r.stage_cycles)
        tick()
    configure(dev, m)
    for i in chunk:  # 2. cascade
        serve_one_sample(dev, client, x[i], m["offload"], log, i)
        tick()


def _device_thread(k: int, target: str, binary: Path, m: dict, x: np.ndarray, chunk: np.ndarray, log: DeviceLog,
                   url: str | None, fleet: str, board_name: str, deadline_s: float, tick, failures: list) -> None:
    from tinyexit.edge.client import EdgeClient
    from tinyexit.harness import firmware

    try:
        with firmware(target, binary) as dev:
            info = dev.info()
            client = None
            if url is not None:
                client = EdgeClient(url, f"{fleet}-dev{k}", bytes.fromhex(info["sha256"]), fleet, board_name,
                                    deadline_s=deadline_s)
                client.wait_connected(5.0)
            try:
                run_device(dev, client, m, x, chunk, log, tick)
            finally:
                if client is not None:
                    client.close()
    except Exception as err:  # reported by the caller, after every device stopped
        failures.append(f"device {k}: {err}")


def fault_checks(target: str, binary: Path, m: dict, x: np.ndarray, url: str, fleet: str, per_fault: int = 3) -> dict:
    """Faults a device must survive, on samples the policy offloads: no edge worker answers (deadline), the edge
    refuses the model (a request naming another model hash), no broker at all. Passed: every sample gets exactly
    one answer, the device's own (RESUME equals the class with every stage run and no offload), within deadline
    + 2 s. The edge side's faults (workers killed, duplicate and late replies, ...) are tests/test_edge.py's."""
    from tinyexit.edge.client import EdgeClient
    from tinyexit.harness import OffloadSetting, firmware
    from tinyexit.policy import NEVER

    deadline = 0.3
    results = {}
    with firmware(target, binary) as dev:
        info = dev.info()
        early = [e["index"] for e in m["exits"] if not e["final"]]
        picks, finals = [], []
        for i in range(len(x)):  # samples the policy offloads, and their all-stages class
            configure(dev, m)
            if dev.infer(x[i], with_output=False, may_offload=True).offload is not None:
                if early:
                    dev.set_policy({e: NEVER for e in early})
                dev.set_offload({e["index"]: OffloadSetting(False) for e in m["exits"]})
                picks.append(i)
                finals.append(dev.infer(x[i], with_output=False).predicted_class)
            if len(picks) == per_fault:
                break
        faults = {"no edge worker": (url, f"{fleet}-empty", bytes.fromhex(info["sha256"])),
                  "another model hash": (url, fleet, bytes(32)),
                  "no broker": ("mqtt://127.0.0.1:1", fleet, bytes.fromhex(info["sha256"]))}
        for name, (where, fleet_name, model) in faults.items():
            ok = bool(picks)
            with EdgeClient(where, f"{fleet}-fault", model, fleet_name, deadline_s=deadline, retries=0) as client:
                client.wait_connected(2.0 if where == url else 0.2)
                for i, final in zip(picks, finals):
                    configure(dev, m)
                    log = DeviceLog(1)
                    start = time.monotonic()
                    serve_one_sample(dev, client, x[i], m["offload"], log, 0)
                    ok &= log.source[0] == "fallback" and log.cascade_cls[0] == final and \
                        time.monotonic() - start < deadline + 2.0
            results[name] = bool(ok)
    return results


class _ReadyLine:
    """The `out` of tinyexit.edge.service.serve: notices its ready line."""

    def __init__(self):
        self.ready = threading.Event()
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)
        if "edge ready" in text:
            self.ready.set()

    def flush(self) -> None:
        pass


class EdgeService:
    """A private broker and the edge service in this process (threads + its worker processes), for one run."""

    def __init__(self, export: Path, edge_model: Path | None, cache: str, fleet: str, workers: int):
        self.export, self.edge_model, self.cache, self.fleet, self.workers = export, edge_model, cache, fleet, workers
        self.stop = threading.Event()
        self.out = _ReadyLine()
        self.error: BaseException | None = None
        self.broker = None
        self.thread = None

    def __enter__(self) -> str:
        from tinyexit.edge.broker import PrivateBroker
        from tinyexit.edge.service import serve

        self.broker = PrivateBroker().start()

        def target():
            try:
                serve(str(self.export), broker=self.broker.url, workers=self.workers,
                      edge_model=str(self.edge_model) if self.edge_model else None, cache=self.cache,
                      fleet=self.fleet, stop=self.stop, out=self.out)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                self.error = err
                self.out.ready.set()

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        self.out.ready.wait(120)
        if self.error is not None or not self.out.ready.is_set():
            self.__exit__()
            raise TinyexitError(f"the edge service did not start: {self.error or 'no ready line in 120 s'}")
        return self.broker.url

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(30)
        if self.broker is not None:
            self.broker.close()


def edge_only_predictions(m: dict, export: Path, x: np.ndarray, progress: bool) -> np.ndarray:
    """Every sample's raw input answered as the edge answers a cut -1 request (its edge model, or the device's
    whole network when it has none)."""
    from tinyexit.edge.worker import EdgeModel

    edge_file = next((c["edge"]["file"] for c in m["offload"]["cuts"] if c["edge"]["runs"] == "model"), None)
    model = EdgeModel(export, export / edge_file if edge_file else None, backend="litert-ref")
    shape = m["input"]["shape"]
    it = range(len(x))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="edge only", unit="sample", leave=False)
    return np.array([model.run(-1, x[i].reshape(shape))[0] for i in it])


def ensure_offload(export: Path, m: dict, edge_model: str | None, board: str | None, link: str | None, target: str,
                   data: str | None, progress: bool) -> dict:
    """The manifest's offload section, chosen now on the validation split when it has none (or an edge model is
    given)."""
    from tinyexit import manifest as mf
    from tinyexit import offload, pipeline
    from tinyexit.commands import data_of

    if "offload" in m and edge_model is None and board is None and link is None:
        return m
    ds = pipeline.load_data(m["task"], data_of(data, export, m))
    x, y = pipeline.validation_arrays(m, ds)
    cost_target = target if target != "host" else "qemu-m4"
    offload.calibrate_offload(export, x, y, edge_model, board, link, cost_target, progress=progress)
    return mf.read(export)


def report(m: dict, log: DeviceLog, y: np.ndarray, edge_pred: np.ndarray, board, link, unit: str,
           faults: tuple[int, int], stats: dict) -> dict:
    n = len(y)
    input_bytes = int(np.prod(m["input"]["shape"]))
    energy = np.array([board.energy_uj(c) for c in log.cascade_instr]) + link.energy_uj(log.sent_bytes)
    codec_ratio = {}
    for cut in sorted(set(log.cut[log.offloaded].tolist())):
        sel = log.offloaded & (log.cut == cut)
        codec_ratio[str(cut)] = round(float(log.cut_values[sel].sum() / max(log.sent_bytes[sel].sum(), 1)), 3)
    answered = sum(s in ("edge", "cache") for s in log.source)
    return {
        "task": m["task"], "n_samples": n,
        "device_only_accuracy": float(np.mean(log.device_cls == y)),
        "edge_only_accuracy": float(np.mean(edge_pred == y)),
        "cascade_accuracy": float(np.mean(log.cascade_cls == y)),
        "offload_rate": float(log.offloaded.mean()),
        "bytes_sent_per_sample": float(log.sent_bytes.mean()),
        "bytes_always_offload_per_sample": float(input_bytes),
        "codec_ratio": codec_ratio,
        "device_energy_uj_mean": float(energy.mean()),
        "device_only_energy_uj_mean": float(np.mean([board.energy_uj(c) for c in log.device_instr])),
        "cache_hit_rate": float(sum(s == "cache" for s in log.source) / answered) if answered else 0.0,
        "fallbacks": int(sum(s == "fallback" for s in log.source)),
        "faults_tested": faults[0], "faults_passed": faults[1],
        "answers": {s: int(sum(v == s for v in log.source)) for s in ("device", "edge", "cache", "fallback")},
        "encode_instructions_mean": float(log.encode_instr[log.offloaded].mean()) if log.offloaded.any() else 0.0,
        "instructions_mean": {"cascade": float(log.cascade_instr.mean()), "device_only": float(log.device_instr.mean())},
        "cycle_unit": unit, "board": board.name,
        "link": {"name": link.name, "bytes_per_s": link.bytes_per_s, "energy_uj_per_byte": link.energy_uj_per_byte},
        "policy": {"exits": m["offload"]["exits"], "cuts": [{k: c[k] for k in ("cut", "codec", "bytes_mean")}
                                                             for c in m["offload"]["cuts"]]},
        "fallback_reasons": sorted(set(log.errors))[:10],
        **stats,
    }


def plot(path: Path, rep: dict, log: DeviceLog, y: np.ndarray, edge_pred: np.ndarray, board_links) -> None:
    """Accuracy against bytes sent per sample (an offload threshold swept over the measured per-sample answers: a
    sample whose score at the exit the device stopped at is below it gets the edge-only answer and the run's mean
    bytes per offload, the others the device's answer at that exit), and the same curve against the link time per sample for
    each link speed of the boards' links."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyexit import atomic

    per_offload = log.sent_bytes[log.offloaded].mean() if log.offloaded.any() else rep["bytes_always_offload_per_sample"]
    edge_right = edge_pred == y
    right0 = log.exit0_cls == y
    order = np.sort(np.unique(np.r_[log.score0, 32769]))
    rates, accs = [], []
    for t in order:
        off = log.score0 < t
        rates.append(off.mean())
        accs.append(np.where(off, edge_right, right0).mean())
    rates, accs = np.array(rates), np.array(accs) * 100
    sent = rates * per_offload
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.plot(sent, accs, label="offload threshold sweep (measured answers)")
    a.scatter([rep["bytes_sent_per_sample"]], [rep["cascade_accuracy"] * 100], color="C3", zorder=3,
              label="cascade run")
    a.axhline(rep["device_only_accuracy"] * 100, color="C2", ls="--", label="device only")
    a.axhline(rep["edge_only_accuracy"] * 100, color="C1", ls=":", label="edge only")
    a.axvline(0.3 * rep["bytes_always_offload_per_sample"], color="grey", lw=0.8, label="30% of always offloading")
    a.set_xlabel("bytes sent per sample")
    a.set_ylabel("accuracy (%)")
    a.legend(fontsize=8)
    for name, bps in board_links:
        b.plot(sent / bps * 1e3, accs, label=f"{name} ({bps:,.0f} B/s)")
    b.scatter([rep["bytes_sent_per_sample"] / rep["link"]["bytes_per_s"] * 1e3], [rep["cascade_accuracy"] * 100],
              color="C3", zorder=3)
    b.set_xscale("symlog", linthresh=0.01)
    b.set_xlabel("mean link time per sample (ms)")
    b.set_ylabel("accuracy (%)")
    b.legend(fontsize=8)
    fig.suptitle(f"{rep['task']}: device -> edge cascade, {rep['n_samples']} samples")
    fig.tight_layout()
    atomic.savefig(fig, path, dpi=110)
    plt.close(fig)


def run_fleet(export: str | Path, devices: int, target: str, x: np.ndarray, y: np.ndarray, out_dir: str | Path,
              broker: str | None = None, edge_model: str | None = None, board: str | None = None,
              link: str | None = None, data: str | None = None, workers: int = 2, deadline_s: float = 2.0,
              fleet: str = "run", progress: bool = True, faults: bool = True) -> dict:
    from tinyexit import atomic, boards
    from tinyexit import manifest as mf
    from tinyexit.firmware_build import build

    export, out_dir = Path(export), Path(out_dir)
    atomic.check_writable(out_dir, "--out", folder=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = ensure_offload(export, mf.read(export), edge_model, board, link, target, data, progress)
    section = m["offload"]
    the_board = boards.load(board or section["board"])
    the_link = the_board.link(link or (section["link"]["name"] if board is None else None))
    fw = build(export, target, out_dir / "firmware")
    chunks = [c for c in np.array_split(np.arange(len(x)), devices) if len(c)]
    log = DeviceLog(len(x))
    failures: list[str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=2 * len(x), desc=f"{len(chunks)} devices", unit="sample")
    lock = threading.Lock()

    def tick():
        if bar is not None:
            with lock:
                bar.update(1)

    edge_file = next((c["edge"]["file"] for c in section["cuts"] if c["edge"]["runs"] == "model"), None)
    start = time.monotonic()
    cache_file = out_dir / "edge_cache.sqlite"
    if cache_file.exists():
        cache_file.unlink()  # a fresh cache: the hit rate is this run's

    def fleet_run(url):
        threads = [threading.Thread(target=_device_thread, args=(k, target, fw.binary, m, x, chunk, log, url, fleet,
                                                                  the_board.name, deadline_s, tick, failures))
                   for k, chunk in enumerate(chunks)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    fault_results: dict = {}
    if broker is None:
        with EdgeService(export, export / edge_file if edge_file else None, f"sqlite:{cache_file}", fleet,
                         workers) as url:
            fleet_run(url)
            if faults and not failures:
                fault_results = fault_checks(target, fw.binary, m, x, url, fleet)
    else:
        from tinyexit.edge.broker import check_reachable

        check_reachable(broker)
        fleet_run(broker)
        if faults and not failures:
            fault_results = fault_checks(target, fw.binary, m, x, broker, fleet)
    if bar is not None:
        bar.close()
    if failures:
        raise TinyexitError(failures[0])
    seconds = time.monotonic() - start
    edge_pred = edge_only_predictions(m, export, x, progress)
    unit = "instructions" if target != "host" else "host-ns"
    rep = report(m, log, np.asarray(y), edge_pred, the_board, the_link, unit,
                 (len(fault_results), sum(fault_results.values())),
                 {"devices": len(chunks), "target": target, "broker": broker or "private mosquitto",
                  "wall_seconds": round(seconds, 1), "faults": fault_results})
    atomic.write_json(out_dir / REPORT, rep)
    plot(out_dir / PLOT, rep, log, np.asarray(y), edge_pred,
         sorted({(lk.name, lk.bytes_per_s) for b in boards.all_boards() for lk in b.links}, key=lambda v: v[1]))
    return rep


def bridge(export: str | Path, port: str, x: np.ndarray, y: np.ndarray, out_dir: str | Path, broker: str | None = None,
           baud: int = 115200, device_id: str = "board", board: str | None = None, link: str | None = None,
           deadline_s: float = 5.0, fleet: str = "default", timeout: float = 30.0, progress: bool = True) -> dict:
    """`tinyexit bridge`: a flashed board on a serial port (any pyserial URL) as one device of the fleet."""
    import serial

    from tinyexit import atomic, boards
    from tinyexit import manifest as mf
    from tinyexit.codegen import model_hash
    from tinyexit.edge.broker import check_reachable
    from tinyexit.edge.client import EdgeClient
    from tinyexit.edge.service import running_broker
    from tinyexit.harness import Device

    export, out_dir = Path(export), Path(out_dir)
    atomic.check_writable(out_dir, "--out", folder=True)
    m = mf.read(export)
    if "offload" not in m:
        raise TinyexitError(f"{export}: the manifest has no offload policy (choose one with `tinyexit edge run "
                            f"{export} ...` or tinyexit.offload.calibrate_offload)")
    url = broker or running_broker(fleet)
    if url is None:
        raise TinyexitError(f"no broker: give --broker, or start `tinyexit edge serve {export}` (fleet {fleet}) first")
    check_reachable(url)
    section = m["offload"]
    the_board = boards.load(board or section["board"])
    the_link = the_board.link(link or (section["link"]["name"] if board is None else None))
    try:
        link_ = serial.serial_for_url(port, baudrate=baud, timeout=1.0)
    except (serial.SerialException, ValueError) as err:
        raise TinyexitError(f"--port {port}: cannot open it ({err})") from None
    log = DeviceLog(len(x))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=2 * len(x), desc=f"bridge {port}", unit="sample")
    start = time.monotonic()
    try:
        dev = Device(link_, timeout)
        info = dev.info()
        if bytes.fromhex(info["sha256"]) != model_hash(m):
            raise TinyexitError(f"the board on {port} runs another model than {export} (model hash "
                                f"{info['sha256'][:12]}...): flash it with `tinyexit flash`")
        with EdgeClient(url, device_id, bytes.fromhex(info["sha256"]), fleet, the_board.name,
                        deadline_s=deadline_s) as client:
            client.wait_connected(5.0)
            run_device(dev, client, m, x, np.arange(len(x)), log, (lambda: bar.update(1)) if bar else (lambda: None))
    finally:
        link_.close()
        if bar is not None:
            bar.close()
    seconds = time.monotonic() - start
    edge_pred = edge_only_predictions(m, export, x, progress)
    rep = report(m, log, np.asarray(y), edge_pred, the_board, the_link, info["cycle_unit"], (0, 0),
                 {"devices": 1, "target": info["port"], "broker": url, "wall_seconds": round(seconds, 1)})
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out_dir / REPORT, rep)
    return rep
