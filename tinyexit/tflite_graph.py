"""A `.tflite` file as a small graph of operators and tensors, through TFLite's own schema bindings.

The one place that reads flatbuffers: export splits models into stages with it, reports count MACs and
weight bytes with it, and codegen builds its operator list on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tinyexit.errors import TinyexitError

OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
NUMPY_TYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32,
               "int64": np.int64, "float32": np.float32, "bool": np.bool_}
WEIGHT_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1}  # op -> index of its filter
ZERO_POINT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "int4": (-8, 7)}
PACKED_BITS = {"int4": 4, "uint4": 4, "int2": 2}  # sub-byte types stored packed, low bits first
# builtin options the code generator reads: (options class, required); absent optional ones take defaults
OPTIONS = {"CONV_2D": ("Conv2DOptionsT", True), "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptionsT", True),
           "AVERAGE_POOL_2D": ("Pool2DOptionsT", True), "MAX_POOL_2D": ("Pool2DOptionsT", True),
           "SOFTMAX": ("SoftmaxOptionsT", True), "CONCATENATION": ("ConcatenationOptionsT", True),
           "FULLY_CONNECTED": ("FullyConnectedOptionsT", False), "ADD": ("AddOptionsT", False),
           "MEAN": ("ReducerOptionsT", False), "PAD": ("PadOptionsT", False), "RESHAPE": ("ReshapeOptionsT", False)}


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: np.ndarray | None  # per-tensor: 1 value; per-channel: one per channel
    zero_point: np.ndarray | None
    quantized_dimension: int
    data: np.ndarray | None  # constant tensors only

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(NUMPY_TYPES.get(self.dtype, np.int8)).itemsize

    def describe(self) -> dict:
        """The manifest's description of an input or output tensor."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": float(self.scale[0]) if self.scale is not None else None,
                "zero_point": int(self.zero_point[0]) if self.zero_point is not None else None}


@dataclass
class Operator:
    index: int
    op: str  # builtin name, e.g. "CONV_2D"
    inputs: list[int]  # tensor indices, -1 for an absent optional input
    outputs: list[int]
    options: object  # the schema's *OptionsT object (or None)


class Graph:
    """Subgraph 0 of a TFLite model (the only one TFLite Micro runs for these models)."""

    def __init__(self, buf: bytes, source: str = "<bytes>"):
        """Parse and verify: every index, shape, buffer size, type, scale and zero point is checked here, so a
        damaged file (e.g. bit flips behind a rewritten hash) ends in one TinyexitError, never later."""
        self.source = source
        self.buf = bytes(buf)
        if len(buf) < 8 or buf[4:8] != b"TFL3":
            raise TinyexitError(f"{source}: not a TFLite flatbuffer (no TFL3 identifier)")
        try:
            self.model = schema.ModelT.InitFromPackedBuf(bytearray(buf), 0)
        except Exception as err:  # the generated bindings raise anything on corrupt input
            raise TinyexitError(f"{source}: corrupt TFLite flatbuffer ({type(err).__name__})") from None
        if not self.model.subgraphs:
            raise TinyexitError(f"{source}: the model has no subgraph")
        sub = self.model.subgraphs[0]
        self.tensors = [self._tensor(i, t) for i, t in enumerate(sub.tensors or [])]
        n = len(self.tensors)

        def tensor_indices(values, what: str, optional: bool = False) -> list[int]:
            indices = [int(x) for x in (values if values is not None else [])]
            bad = [i for i in indices if not (-1 if optional else 0) <= i < n]
            if bad:
                raise TinyexitError(f"{source}: {what} names tensor {bad[0]}, but the subgraph has {n} tensors")
            return indices

        codes = []
        for c in self.model.operatorCodes or []:
            code = max(int(c.builtinCode), int(c.deprecatedBuiltinCode))
            if code not in OP_NAMES:
                raise TinyexitError(f"{source}: unknown builtin operator code {code}")
            codes.append(code)
        self.ops = []
        for i, o in enumerate(sub.operators or []):
            if not 0 <= o.opcodeIndex < len(codes):
                raise TinyexitError(f"{source}: operator {i} names operator code {o.opcodeIndex}, but the model "
                                    f"has {len(codes)}")
            code = codes[o.opcodeIndex]
            name = OP_NAMES[code]
            if code == schema.BuiltinOperator.CUSTOM:
                custom = self.model.operatorCodes[o.opcodeIndex].customCode
                name = f"CUSTOM({custom.decode(errors='replace') if isinstance(custom, bytes) else custom})"
            inputs = tensor_indices(o.inputs, f"operator {i} ({name}) input", optional=True)
            outputs = tensor_indices(o.outputs, f"operator {i} ({name}) output")
            if not outputs or min(outputs) < 0:
                raise TinyexitError(f"{source}: operator {i} ({name}) has no output")
            options = o.builtinOptions
            expected = OPTIONS.get(name)
            if expected is not None:
                cls, required = expected
                if options is None and not required:
                    options = getattr(schema, cls)()  # absent options mean the defaults, as in TFLite
                if type(options).__name__ != cls:
                    found = "none" if options is None else type(options).__name__.removesuffix("T")
                    raise TinyexitError(f"{source}: operator {i} ({name}) needs {cls.removesuffix('T')}, "
                                        f"the file has {found}")
            self.ops.append(Operator(i, name, inputs, outputs, options))
        self.inputs = tensor_indices(sub.inputs, "the subgraph's input")
        self.outputs = tensor_indices(sub.outputs, "the subgraph's output")
        if not self.inputs or not self.outputs:
            raise TinyexitError(f"{source}: the subgraph has no {'input' if not self.inputs else 'output'}")

    @classmethod
    def load(cls, path: str | Path) -> "Graph":
        path = Path(path)
        if not path.is_file():
            raise TinyexitError(f"model not found: {path}")
        return cls(path.read_bytes(), str(path))

    def _tensor(self, index: int, t) -> Tensor:
        source = self.source
        try:
            name = t.name.decode() if isinstance(t.name, bytes) else str(t.name or "")
        except UnicodeDecodeError:
            raise TinyexitError(f"{source}: tensor {index} has a name that is not UTF-8 (damaged file)") from None
        where = f"{source}: tensor {index} ('{name[:60]}')"
        if t.type not in TYPE_NAMES:
            raise TinyexitError(f"{where} has an unknown type {t.type}")
        dtype = TYPE_NAMES[t.type]
        shape = tuple(int(d) for d in t.shape) if t.shape is not None else ()
        if any(d < 0 for d in shape) or len(shape) > 8:
            raise TinyexitError(f"{where} has an invalid shape {list(shape)}")
        count = int(np.prod(shape, dtype=np.float64))
        if count > 1 << 31:
            raise TinyexitError(f"{where} has an implausible shape {list(shape)}")
        q = t.quantization
        scale = np.asarray(q.scale, np.float64) if q is not None and q.scale is not None and len(q.scale) else None
        zp = np.asarray(q.zeroPoint, np.int64) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else None
        axis = int(q.quantizedDimension) if q is not None else 0
        if scale is not None:
            if not np.all(np.isfinite(scale)):
                raise TinyexitError(f"{where} has a scale that is not a finite number")
            if zp is not None and len(zp) not in (1, len(scale)):
                raise TinyexitError(f"{where} has {len(scale)} scales but {len(zp)} zero points")
            if len(scale) > 1 and not (0 <= axis < len(shape) and shape[axis] == len(scale)):
                raise TinyexitError(f"{where} has {len(scale)} per-channel scales along dimension {axis} of "
                                    f"shape {list(shape)}")
        if dtype in ("int8", "int4", "int16") and (scale is None or zp is None):
            raise TinyexitError(f"{where} is {dtype} without a scale and zero point (not a quantized model)")
        if zp is not None and dtype in ZERO_POINT_RANGE:
            lo, hi = ZERO_POINT_RANGE[dtype]
            if zp.min() < lo or zp.max() > hi:
                raise TinyexitError(f"{where} has a zero point outside the {dtype} range [{lo}, {hi}]")
        data = None
        buffers = self.model.buffers or []
        if not 0 <= t.buffer < max(len(buffers), 1):
            raise TinyexitError(f"{where} names buffer {t.buffer}, but the model has {len(buffers)}")
        if 0 < t.buffer < len(buffers) and buffers[t.buffer].data is not None and len(buffers[t.buffer].data):
            raw = buffers[t.buffer].data
            if dtype not in NUMPY_TYPES:
                bits = PACKED_BITS.get(dtype)
                if bits is not None and len(raw) != -(-count * bits // 8):
                    raise TinyexitError(f"{where} holds {len(raw)} bytes, its shape {list(shape)} needs "
                                        f"{-(-count * bits // 8)}")
                data = np.asarray(raw, np.uint8)  # e.g. packed int4: raw bytes
            else:
                itemsize = np.dtype(NUMPY_TYPES[dtype]).itemsize
                if len(raw) != count * itemsize:
                    raise TinyexitError(f"{where} holds {len(raw)} bytes, its shape {list(shape)} needs "
                                        f"{count * itemsize}")
                data = np.frombuffer(bytes(bytearray(raw)), NUMPY_TYPES[dtype]).reshape(shape)
        return Tensor(index, name, shape, dtype, scale, zp, axis, data)

    def sha256(self) -> str:
        return hashlib.sha256(self.buf).hexdigest()

    def producers(self) -> dict[int, Operator]:
        return {t: op for op in self.ops for t in op.outputs}

    def ancestors(self, t: int) -> set[int]:
        """Indices of the operators needed to compute tensor t from the graph's inputs."""
        producers = self.producers()
        found, frontier = set(), [t]
        while frontier:
            op = producers.get(frontier.pop())
            if op is None or op.index in found:
                continue
            found.add(op.index)
            frontier.extend(i for i in op.inputs if i >= 0)
        return found

    def macs(self, op: Operator) -> int:
        """Multiply-accumulates of one operator (the usual count: conv, depthwise, dense, transposed conv, batch
        matmul; others 0)."""
        out = self.tensors[op.outputs[0]].shape
        if op.op == "TRANSPOSE_CONV":  # products landing inside the output (TFLite Micro skips the others)
            out_c, kh, kw, cin = self.tensors[op.inputs[1]].shape
            n, in_h, in_w, _ = self.tensors[op.inputs[2]].shape
            o = op.options

            def landing(in_size: int, k: int, stride: int, out_size: int) -> int:
                pad = 0
                if o.padding == 0:  # SAME, computed as TFLite Micro does (from the output size)
                    pad = max((-(-out_size // stride) - 1) * stride + k - out_size, 0) // 2
                return sum(0 <= i * stride - pad + j < out_size for i in range(in_size) for j in range(k))

            return n * landing(in_h, kh, o.strideH, out[1]) * landing(in_w, kw, o.strideW, out[2]) * cin * out_c
        if op.op == "BATCH_MATMUL":
            lhs = self.tensors[op.inputs[0]].shape
            return int(np.prod(out)) * (lhs[-2] if op.options.adjX else lhs[-1])
        if op.op == "CONV_2D":
            _, kh, kw, cin = self.tensors[op.inputs[1]].shape
            return int(np.prod(out)) * kh * kw * cin
        if op.op == "DEPTHWISE_CONV_2D":
            _, kh, kw, _ = self.tensors[op.inputs[1]].shape
            return int(np.prod(out)) * kh * kw
        if op.op == "FULLY_CONNECTED":
            units, depth = self.tensors[op.inputs[1]].shape
            batches = int(np.prod(out)) // units
            return batches * units * depth
        return 0

    def weight_tensor(self, op: Operator) -> Tensor | None:
        i = WEIGHT_INPUT.get(op.op)
        return self.tensors[op.inputs[i]] if i is not None and op.inputs[i] >= 0 else None

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of weight tensors by storage type ("int8", "int4", ...) and of biases ("bias")."""
        totals: dict[str, int] = {}
        for op in self.ops:
            w = self.weight_tensor(op)
            if w is not None and w.is_constant:
                totals[w.dtype] = totals.get(w.dtype, 0) + w.data.nbytes
            if op.op in WEIGHT_INPUT and len(op.inputs) > 2 and op.inputs[2] >= 0:
                b = self.tensors[op.inputs[2]]
                if b.is_constant:
                    totals["bias"] = totals.get("bias", 0) + b.data.nbytes
        return totals

    def total_macs(self) -> int:
        return sum(self.macs(op) for op in self.ops)


def serialize(model: "schema.ModelT") -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def extract(graph: Graph, inputs: list[int], outputs: list[int]) -> bytes:
    """A standalone model computing `outputs` from `inputs` (tensor indices of `graph`).

    Takes exactly the operators between them; fails if an operator needs a non-constant tensor that is
    neither one of `inputs` nor computed inside. Constant buffers are copied, others point at buffer 0.
    """
    import copy

    producers = graph.producers()
    stop = set(inputs)
    needed: set[int] = set()
    frontier = list(outputs)
    seen: set[int] = set()
    while frontier:
        t = frontier.pop()
        if t in seen or t in stop or t < 0:
            continue
        seen.add(t)
        if graph.tensors[t].is_constant:
            continue
        op = producers.get(t)
        if op is None:
            raise TinyexitError(f"{graph.source}: tensor '{graph.tensors[t].name}' is needed but is neither "
                                f"computed in the stage nor its input")
        needed.add(op.index)
        frontier.extend(op.inputs)
    ops = [graph.ops[i] for i in sorted(needed)]

    src = graph.model.subgraphs[0]
    used = list(dict.fromkeys(list(inputs) + [t for op in ops for t in op.inputs + op.outputs if t >= 0] + list(outputs)))
    remap = {old: new for new, old in enumerate(used)}
    buffers = [schema.BufferT()]
    tensors = []
    for old in used:
        t = copy.copy(src.tensors[old])
        if graph.tensors[old].is_constant:
            buffers.append(graph.model.buffers[t.buffer])
            t.buffer = len(buffers) - 1
        else:
            t.buffer = 0
        tensors.append(t)
    operators = []
    for op in ops:
        o = copy.copy(src.operators[op.index])
        o.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
        o.outputs = [remap[i] for i in op.outputs]
        operators.append(o)

    sub = schema.SubGraphT()
    sub.tensors, sub.operators = tensors, operators
    sub.inputs, sub.outputs = [remap[i] for i in inputs], [remap[i] for i in outputs]
    sub.name = src.name
    model = schema.ModelT()
    model.version, model.description = graph.model.version, graph.model.description
    model.operatorCodes, model.subgraphs, model.buffers = graph.model.operatorCodes, [sub], buffers
    model.metadata = []
    for meta in graph.model.metadata or []:
        m = copy.copy(meta)
        buffers.append(graph.model.buffers[meta.buffer])
        m.buffer = len(buffers) - 1
        model.metadata.append(m)
    return serialize(model)


def signature_outputs(graph: Graph) -> list[int]:
    """Output tensor indices in the order of the converted model's signature (`output_0`, `output_1`, ...),
    which is the Keras output order; the subgraph's own output order is not."""
    sigs = graph.model.signatureDefs or []
    if not sigs:
        return list(graph.outputs)
    maps = {(m.name.decode() if isinstance(m.name, bytes) else m.name): m.tensorIndex for m in sigs[0].outputs}
    names = sorted(maps, key=lambda n: int(n.rsplit("_", 1)[-1]) if n.rsplit("_", 1)[-1].isdigit() else n)
    return [int(maps[n]) for n in names]
