"""One edge worker process: takes requests from the fleet's shared subscription, answers each one.

Per request: parse (a damaged frame gets a BAD_REQUEST reply when its device id is still legible, else it is
dropped: the device falls back at its deadline), refuse a model hash the worker does not serve
(UNKNOWN_MODEL), decode the payload, look it up in the cache, else run the rest of the network (the export's
stages after the cut, TFLite Micro's interpreter) or the bigger edge model (raw inputs only), reply, and store
the result. Run as `python -m tinyexit.edge.worker ...` by `tinyexit edge serve`.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import signal
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np

from tinyexit.edge import protocol
from tinyexit.edge.protocol import Reply, Request
from tinyexit.errors import TinyexitError

REGISTRY_PERIOD_S = 2.0


def _conf_from_probs(p: np.ndarray) -> tuple[int, int]:
    cls = int(np.argmax(p))
    return cls, int(min(32767, round(float(p[cls]) * 32768)))


class EdgeModel:
    """What a worker runs for one export: the stages after each cut, or an edge model on the raw input."""

    def __init__(self, export: str | Path, edge_model: str | Path | None = None, backend: str = "tflm"):
        from tinyexit import manifest as mf
        from tinyexit.codegen import model_hash
        from tinyexit.reference import load_stages

        self.manifest = m = mf.read(export)
        self.hash = model_hash(m)
        self.stages = load_stages(m, backend)
        self.final_exit = next(e for e in m["exits"] if e["final"])
        # the tensor each cut sends: -1 the model's input, k stage k's features
        self.cut_tensors = {protocol.RAW_INPUT_CUT: {"shape": m["input"]["shape"], "zero_point": m["input"]["zero_point"],
                                                     "scale": m["input"]["scale"]}}
        for k, s in enumerate(m["stages"][:-1]):
            self.cut_tensors[k] = s["outputs"][0]
        self.edge = None
        if edge_model is not None:
            self.edge = _EdgeNetwork(Path(edge_model), m["input"], backend)

    def shape_of(self, cut: int) -> tuple[int, ...]:
        return tuple(self.cut_tensors[cut]["shape"])

    def zero_point_of(self, cut: int) -> int:
        return int(self.cut_tensors[cut]["zero_point"])

    def run(self, cut: int, tensor: np.ndarray) -> tuple[int, int]:
        """(class, confidence Q15) for a cut tensor (with batch dimension)."""
        from tinyexit import policy

        if cut == protocol.RAW_INPUT_CUT and self.edge is not None:
            return self.edge(tensor)
        feature = tensor
        for k in range(cut + 1, len(self.stages)):
            outs = self.stages[k](feature)
            if k == self.final_exit["stage"]:
                cls, conf = policy.exit_scores(self.final_exit, outs[self.final_exit["output"]].reshape(1, -1),
                                               "max_prob")
                return int(cls[0]), int(conf[0])
            feature = outs[0]
        raise TinyexitError("the export's final exit is not on its last stage")


class _EdgeNetwork:
    """A bigger plain .tflite on the same float features: requantize the device's int8 input to its input
    scale, run it, class and confidence from its (softmax or logit) output."""

    def __init__(self, path: Path, device_input: dict, backend: str):
        from tinyexit.reference import StageInterpreter
        from tinyexit.tflite_graph import Graph

        if not path.is_file():
            raise TinyexitError(f"--edge-model {path}: no such file")
        buf = path.read_bytes()
        g = Graph(buf, str(path))
        self.interpreter = StageInterpreter(buf, backend, path.name)
        t_in = g.tensors[g.inputs[0]]
        if int(np.prod(t_in.shape)) != int(np.prod(device_input["shape"])):
            raise TinyexitError(f"--edge-model {path}: its input {list(t_in.shape)} is not the export's "
                                f"{device_input['shape']}")
        self.in_shape, self.in_dtype = t_in.shape, t_in.dtype
        self.in_scale = float(t_in.scale[0]) if t_in.scale is not None else None
        self.in_zp = int(t_in.zero_point[0]) if t_in.zero_point is not None else 0
        self.dev_scale, self.dev_zp = float(device_input["scale"]), int(device_input["zero_point"])
        out = g.tensors[g.outputs[0]]
        self.out_scale = float(out.scale[0]) if out.scale is not None else None
        self.out_zp = int(out.zero_point[0]) if out.zero_point is not None else 0
        producer = g.producers().get(g.outputs[0])
        self.softmax_out = producer is not None and producer.op == "SOFTMAX"

    def __call__(self, tensor: np.ndarray) -> tuple[int, int]:
        x = (tensor.astype(np.float32) - self.dev_zp) * self.dev_scale
        if self.in_scale is not None:
            x = np.clip(np.round(x / self.in_scale) + self.in_zp, -128, 127).astype(np.int8)
        out = self.interpreter(x.reshape(self.in_shape).astype(np.dtype(self.in_dtype)))[0].reshape(-1)
        y = out.astype(np.float64)
        if self.out_scale is not None:
            y = (y - self.out_zp) * self.out_scale
        if not self.softmax_out:
            y = np.exp(y - y.max())
            y /= y.sum()
        return _conf_from_probs(y)


def codec_params(raw: bytes, zero_point: int) -> tuple[int, int, bool]:
    """(zero point, shift, signed codes) from a request's codec params: empty = the cut tensor's zero point,
    shift 0, unsigned codes; else 3 bytes: zero point i8, shift i8, flags u8 (bit 0: signed codes)."""
    if not raw:
        return zero_point, 0, False
    if len(raw) != 3:
        raise protocol.ProtocolError(f"codec params are {len(raw)} bytes; expected 0 or 3")
    zp, shift, flags = struct.unpack("<bbB", raw)
    return zp, shift, bool(flags & 1)


def decode_payload(request: Request, shape: tuple[int, ...], zero_point: int = 0) -> np.ndarray:
    """The int8 cut tensor (with its shape) a request carries; ProtocolError when it cannot be decoded."""
    size = int(np.prod(shape))
    if request.codec == protocol.CODEC_RAW:
        if len(request.payload) != size:
            raise protocol.ProtocolError(f"raw payload of {len(request.payload)} bytes; cut {request.cut} has {size}")
        return np.frombuffer(request.payload, np.int8).reshape(shape)
    try:
        from tinyexit.edge import codec  # tinyexit/edge/codec.py (helper "codec"); only when a device uses it
    except ImportError:
        raise protocol.ProtocolError(f"codec kind {request.codec} is not supported by this edge") from None
    zp, shift, signed = codec_params(request.codec_params, zero_point)
    try:
        values, used = codec.decode(codec.Params(request.codec, zp, shift, signed), request.payload, size)
    except ValueError as err:  # CodecError, an unknown kind, bad params: a damaged or foreign payload
        raise protocol.ProtocolError(f"codec kind {request.codec} cannot decode the payload ({str(err)[:100]})") from None
    if used != len(request.payload) or np.asarray(values).size != size:
        raise protocol.ProtocolError(f"codec kind {request.codec}: payload of {len(request.payload)} bytes, "
                                     f"{used} decoded into {np.asarray(values).size} values; cut {request.cut} has {size}")
    return np.asarray(values, np.int8).reshape(shape)


class Worker:
    """Serves one model on one broker; `handle` is the request->reply logic (usable without MQTT)."""

    def __init__(self, model: EdgeModel, fleet: str, worker_id: str, cache=None, board: str = "edge"):
        self.model, self.fleet, self.id, self.cache, self.board = model, fleet, worker_id, cache, board
        self.inbox: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.served = self.cache_answers = self.refused = self.bad = 0
        self.busy_s = 0.0
        self.started = time.monotonic()
        self.client = None

    def handle(self, data: bytes) -> tuple[str | None, Reply | None]:
        """(device id, reply) for one request frame; (None, None) when nobody can be answered."""
        try:
            req = protocol.parse_request(data)
        except protocol.ProtocolError as err:
            self.bad += 1
            header = protocol.peek_header(data)
            if header is None:
                return None, None
            device, request_id, model_hash = header
            return device, Reply(request_id, model_hash, protocol.BAD_REQUEST, worker_id=self.id, message=str(err))
        reply = Reply(req.request_id, req.model_hash, worker_id=self.id)
        if req.model_hash != self.model.hash:
            self.refused += 1
            reply.status, reply.message = protocol.UNKNOWN_MODEL, f"this edge serves model {self.model.hash.hex()[:12]}"
            return req.device_id, reply
        if req.cut not in self.model.cut_tensors:
            self.bad += 1
            reply.status, reply.message = protocol.BAD_REQUEST, f"cut {req.cut} is not a cut of this model"
            return req.device_id, reply
        zp = self.model.zero_point_of(req.cut)
        try:
            tensor = decode_payload(req, self.model.shape_of(req.cut), zp)
        except protocol.ProtocolError as err:
            self.bad += 1
            reply.status, reply.message = protocol.BAD_REQUEST, str(err)
            return req.device_id, reply
        hit = self.cache.get(self.model.hash, req.cut, tensor, zp) if self.cache is not None else None
        if hit is not None:
            self.cache_answers += 1
            reply.cls, reply.confidence_q15, reply.source = hit.cls, hit.confidence_q15, protocol.SOURCE_CACHE
        else:
            try:
                reply.cls, reply.confidence_q15 = self.model.run(req.cut, tensor)
            except Exception as err:  # the interpreter's own failure: answer it, the device falls back
                reply.status, reply.message = protocol.EDGE_ERROR, str(err)[:200]
                return req.device_id, reply
            if self.cache is not None:
                self.cache.put(self.model.hash, req.cut, tensor, reply.cls, reply.confidence_q15, zp)
        self.served += 1
        return req.device_id, reply

    # ---- MQTT ----
    def member(self) -> protocol.Member:
        elapsed = max(time.monotonic() - self.started, 1e-3)
        return protocol.Member(self.id, "worker", self.board, self.model.hash.hex(),
                               {"core": platform.machine().lower().replace("_", "-"), "cpus": os.cpu_count(), "edge_model": self.model.edge is not None,
                                "cuts": sorted(self.model.cut_tensors), "served": self.served,
                                "cache_answers": self.cache_answers},
                               load=round(min(1.0, self.busy_s / elapsed), 3), pid=os.getpid())

    def run_forever(self, url: str) -> None:
        from tinyexit.edge import registry
        from tinyexit.edge.broker import connect_client, new_client

        client = self.client = new_client(self.id)
        registry.set_will(client, self.fleet, self.id)

        def on_connect(client, userdata, flags, reason_code, properties):
            if reason_code.is_failure:
                return
            client.subscribe(protocol.topic_shared_requests(self.fleet), qos=1)
            registry.publish(client, self.fleet, self.member())

        client.on_connect = on_connect
        client.on_message = lambda c, u, msg: self.inbox.put(msg.payload)
        connect_client(client, url)
        last_registry = time.monotonic()
        try:
            while not self.stop.is_set():
                try:
                    data = self.inbox.get(timeout=0.2)
                except queue.Empty:
                    data = None
                if data is not None:
                    t0 = time.monotonic()
                    device, reply = self.handle(data)
                    if reply is not None:
                        client.publish(protocol.topic_reply(self.fleet, device), reply.encode(), qos=1)
                    self.busy_s += time.monotonic() - t0
                if time.monotonic() - last_registry > REGISTRY_PERIOD_S and client.is_connected():
                    registry.publish(client, self.fleet, self.member())
                    last_registry = time.monotonic()
        finally:
            if client.is_connected():
                registry.clear(client, self.fleet, self.id).wait_for_publish(2)
            client.disconnect()
            client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyexit.edge.worker", description=__doc__.splitlines()[0])
    parser.add_argument("export")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--fleet", default="default")
    parser.add_argument("--id", required=True)
    parser.add_argument("--edge-model")
    parser.add_argument("--cache", default="none", help="a resolved cache spec (see tinyexit.edge.cache)")
    parser.add_argument("--near-threshold", type=float, default=None)
    parser.add_argument("--near-min-confidence", type=float, default=None)
    args = parser.parse_args(argv)
    from tinyexit.edge.cache import DEFAULT_NEAR_MIN_CONFIDENCE_Q15, DEFAULT_NEAR_THRESHOLD, open_cache

    try:
        model = EdgeModel(args.export, args.edge_model)
        near = DEFAULT_NEAR_THRESHOLD if args.near_threshold is None else (
            None if args.near_threshold <= 0 else args.near_threshold)
        min_conf = DEFAULT_NEAR_MIN_CONFIDENCE_Q15 if args.near_min_confidence is None else round(
            args.near_min_confidence * 32768)
        cache = open_cache(args.cache, near, min_conf)
        worker = Worker(model, args.fleet, args.id, cache)
        signal.signal(signal.SIGTERM, lambda *a: worker.stop.set())
        signal.signal(signal.SIGINT, lambda *a: worker.stop.set())
        worker.run_forever(args.broker)
    except TinyexitError as err:
        print(f"tinyexit: error: edge worker {args.id}: {err}", file=sys.stderr)
        return 2
    print(f"edge worker {args.id}: {worker.served} answered ({worker.cache_answers} from the cache), "
          f"{worker.refused} refused (other model), {worker.bad} bad requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
