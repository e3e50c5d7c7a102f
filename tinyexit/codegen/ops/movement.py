"""Operators that move bytes without arithmetic: RESHAPE, SQUEEZE, EXPAND_DIMS, STRIDED_SLICE, SLICE,
TRANSPOSE, REVERSE_V2, TILE, SPLIT, SPLIT_V, UNPACK, PACK, CONCATENATION, PAD, PADV2, SPACE_TO_DEPTH,
DEPTH_TO_SPACE and RESIZE_NEAREST_NEIGHBOR.

TFLite Micro copies int8 values as they are in all of them, whatever the input and output quantization, and
so do these (its CONCATENATION alone refuses inputs quantized unlike its output, and so does this one). Each operator is planned here as
a list of strided copies (`Copy`, kernels/copy_strided_s8.cc: output[o0 + sum i_k * os_k] = input[i0 +
sum i_k * is_k]) computed from its shapes and constant parameters; a copy that is one contiguous run becomes
`copy_s8`. RESIZE_NEAREST_NEIGHBOR's index map is not affine: it gets its own kernel with per-row and
per-column offset tables. The same plans evaluate constant tensors with numpy (codegen/fold.py), so folding
and the device agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyexit.codegen.ops.base import Op, c_array, scale_of, zp_of
from tinyexit.errors import TinyexitError
from tinyexit.tflite_graph import NUMPY_TYPES, Graph, Operator

MAX_COPY_DIMS = 8  # kernels_movement.h kMaxCopyDims


def row_major(shape) -> list[int]:
    """Elements between neighbours along each axis of a row-major tensor."""
    strides = [1] * len(shape)
    for k in range(len(shape) - 2, -1, -1):
        strides[k] = strides[k + 1] * int(shape[k + 1])
    return strides


@dataclass
class Copy:
    """output[out_start + sum(i_k * out_stride_k)] = input[in_start + sum(i_k * in_stride_k)] for every index
    i < count (outermost axis first); `source` and `target` are tensor indices."""
    source: int
    target: int
    count: list[int]
    in_stride: list[int]
    out_stride: list[int]
    in_start: int = 0
    out_start: int = 0

    @property
    def size(self) -> int:
        return int(np.prod(self.count))

    def simplified(self) -> "Copy":
        """Axes of extent 1 dropped and neighbours that walk both tensors evenly merged: the fewest loops."""
        axes = [(c, i, o) for c, i, o in zip(self.count, self.in_stride, self.out_stride) if c != 1]
        merged: list[tuple[int, int, int]] = []
        for c, i, o in axes:
            if merged and merged[-1][1] == i * c and merged[-1][2] == o * c:
                merged[-1] = (merged[-1][0] * c, i, o)
            else:
                merged.append((c, i, o))
        merged = merged or [(1, 1, 1)]
        return Copy(self.source, self.target, [m[0] for m in merged], [m[1] for m in merged],
                    [m[2] for m in merged], self.in_start, self.out_start)

    @property
    def contiguous(self) -> bool:
        return len(self.count) == 1 and self.in_stride[0] == 1 and self.out_stride[0] == 1

    def indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat (input, output) element indices, in the kernel's order."""
        src, dst = np.array(self.in_start), np.array(self.out_start)
        for c, i, o in zip(self.count, self.in_stride, self.out_stride):
            step = np.arange(c)
            src, dst = src[..., None] + step * i, dst[..., None] + step * o
        return src.reshape(-1), dst.reshape(-1)


def gather(source: int, target: int, in_shape, begin, count, step=None) -> Copy:
    """The box of `count` elements of a row-major input starting at `begin`, every `step`-th (negative:
    backwards), written out row-major: slices, splits, unpacking."""
    rm = row_major(in_shape)
    step = step or [1] * len(rm)
    return Copy(source, target, [int(c) for c in count], [s * r for s, r in zip(step, rm)], row_major(count),
                int(sum(b * r for b, r in zip(begin, rm))))


def place(source: int, target: int, in_shape, out_shape, begin) -> Copy:
    """A whole input written into the box of a row-major output starting at `begin`: concatenation, packing,
    padding."""
    rm = row_major(out_shape)
    return Copy(source, target, [int(c) for c in in_shape], row_major(in_shape), rm,
                out_start=int(sum(b * r for b, r in zip(begin, rm))))


def constant_ints(graph: Graph, op: Operator, index: int, what: str) -> list[int]:
    """A constant integer input (after folding) as a flat list."""
    i = op.inputs[index] if index < len(op.inputs) else -1
    if i < 0 or not graph.tensors[i].is_constant:
        raise TinyexitError(f"{graph.source}: {op.op} '{graph.tensors[op.outputs[0]].name}' has a computed {what} "
                            f"that is not known at generation time; not supported")
    return [int(v) for v in graph.tensors[i].data.reshape(-1)]


def axis_of(graph: Graph, op: Operator, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise TinyexitError(f"{graph.source}: {op.op} '{graph.tensors[op.outputs[0]].name}' has axis {axis} outside "
                            f"its {rank} dimensions")
    return axis % rank


class MoveOp(Op):
    """Base: the op is `copies()` (after filling its outputs with `fill_value()`, PAD only). Constant int8
    sources (e.g. a constant CONCATENATION input) are emitted as arrays."""

    def check(self):
        self.plan = self.copies(self.graph, self.op)
        for c in self.plan:
            if len(c.count) > MAX_COPY_DIMS:
                raise TinyexitError(f"{self.graph.source}: {self.op.op} '{self.t(self.outputs[0]).name}' needs "
                                    f"{len(c.count)} nested loops (at most {MAX_COPY_DIMS})")

    @classmethod
    def copies(cls, graph: Graph, op: Operator) -> list[Copy]:
        """The op as strided copies, simplified; empty ones left out. Raises what the op does not support."""
        plan = [c.simplified() for c in cls.plan_copies(graph, op) if c.size > 0]
        for t in op.outputs:  # every output element written once (PAD: the rest is filled)
            written = sum(c.size for c in plan if c.target == t)
            if written != int(np.prod(graph.tensors[t].shape)) and cls.fill_value(graph, op) is None:
                raise TinyexitError(f"{graph.source}: {op.op} '{graph.tensors[t].name}' has shape "
                                    f"{graph.tensors[t].shape}, but its parameters select {written} elements")
        return plan

    @classmethod
    def plan_copies(cls, graph: Graph, op: Operator) -> list[Copy]:
        raise NotImplementedError

    @classmethod
    def fill_value(cls, graph: Graph, op: Operator) -> int | None:
        return None

    @classmethod
    def evaluate(cls, graph: Graph, op: Operator) -> list[np.ndarray]:
        """The outputs from constant inputs, with numpy (constant folding)."""
        fill = cls.fill_value(graph, op)
        outs = {t: np.full(int(np.prod(graph.tensors[t].shape)), fill or 0, NUMPY_TYPES[graph.tensors[t].dtype])
                for t in op.outputs}
        for c in cls.copies(graph, op):
            src, dst = c.indices()
            outs[c.target][dst] = graph.tensors[c.source].data.reshape(-1)[src]
        return [outs[t].reshape(graph.tensors[t].shape) for t in op.outputs]

    def weight_bytes(self) -> int:
        return sum(self.t(i).data.nbytes for i in self.constant_sources())

    def constant_sources(self) -> list[int]:
        return list(dict.fromkeys(c.source for c in self.plan if self.t(c.source).is_constant))

    def source(self, ptr, t: int) -> str:
        return f"{self.name}_const{t}" if self.t(t).is_constant else ptr(t)

    def definitions(self) -> str:
        text = "".join(c_array("int8_t", f"{self.name}_const{t}", self.t(t).data) for t in self.constant_sources())
        for j, c in enumerate(self.plan):
            if not c.contiguous:
                text += (f"static const StridedCopyParams {self.name}_copy{j} = {{{len(c.count)}, {braces(c.count)}, "
                         f"{braces(c.in_stride)}, {braces(c.out_stride)}, {c.in_start}, {c.out_start}}};\n")
        return text

    def call(self, ptr) -> str:
        lines = []
        fill = self.fill_value(self.graph, self.op)
        if fill is not None:
            lines += [f"fill_s8({fill}, {self.t(t).nbytes}, {ptr(t)});" for t in self.outputs]
        for j, c in enumerate(self.plan):
            src, dst = self.source(ptr, c.source), ptr(c.target)
            if c.contiguous:
                lines.append(f"copy_s8({offset(src, c.in_start)}, {c.count[0]}, {offset(dst, c.out_start)});")
            else:
                lines.append(f"copy_strided_s8({self.name}_copy{j}, {src}, {dst});")
        return "\n  ".join(lines) or "// nothing to move"


def braces(values) -> str:
    return "{" + ", ".join(map(str, values)) + "}"


def offset(pointer: str, elements: int) -> str:
    return f"{pointer} + {elements}" if elements else pointer


class ReshapeOp(MoveOp):
    """RESHAPE, SQUEEZE, EXPAND_DIMS: the same bytes under another shape. The planner gives the output its
    input's buffer (`alias`), so no code runs; a copy only if it could not. The shape input may be computed:
    folding makes it constant; the output tensor's own shape is what TFLite Micro uses."""

    alias = True

    def call(self, ptr) -> str:
        return "// reshape: the output shares its input's bytes" if self.aliased else super().call(ptr)

    @classmethod
    def plan_copies(cls, graph, op):
        src, dst = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        n = int(np.prod(src.shape))
        if n != int(np.prod(dst.shape)):
            raise TinyexitError(f"{graph.source}: {op.op} '{dst.name}' turns {src.shape} into {dst.shape} "
                                f"(different sizes: a shape only known at run time?)")
        return [Copy(op.inputs[0], op.outputs[0], [n], [1], [1])]


class StridedSliceOp(MoveOp):
    """STRIDED_SLICE as TFLite Micro evaluates it (strided_slice_logic.h): begin/end masks, negative indices
    and strides, shrink-axis; the ellipsis and new-axis masks are ignored by TFLite Micro (the converter
    lowers them to RESHAPE), so a model relying on them is refused."""

    @classmethod
    def plan_copies(cls, graph, op):
        o = op.options
        shape = graph.tensors[op.inputs[0]].shape
        name = graph.tensors[op.outputs[0]].name
        begin, end, strides = (constant_ints(graph, op, k, what) for k, what in
                               ((1, "begin"), (2, "end"), (3, "strides")))
        if not len(begin) == len(end) == len(strides) == len(shape):
            raise TinyexitError(f"{graph.source}: STRIDED_SLICE '{name}': begin/end/strides must have one value per "
                                f"input dimension ({len(shape)})")
        if o.offset or o.ellipsisMask or o.newAxisMask:
            raise TinyexitError(f"{graph.source}: STRIDED_SLICE '{name}' uses offset, ellipsis or new-axis masks, "
                                f"which TFLite Micro ignores; not supported")
        starts, counts, kept = [], [], []
        for k, size in enumerate(shape):
            stride = strides[k]
            if stride == 0:
                raise TinyexitError(f"{graph.source}: STRIDED_SLICE '{name}' has a zero stride")
            start = begin[k] + size if begin[k] < 0 else begin[k]
            start = min(max(start, 0), size) if stride > 0 else min(max(start, -1), size - 1)
            if o.beginMask >> k & 1:
                start = 0 if stride > 0 else size - 1
            if o.shrinkAxisMask >> k & 1:
                stop = start if start >= size else start + 1
            else:
                stop = end[k] + size if end[k] < 0 else end[k]
                stop = min(max(stop, 0), size) if stride > 0 else min(max(stop, -1), size - 1)
                if o.endMask >> k & 1:
                    stop = size if stride > 0 else -1
                kept.append(k)
            count = max(0, -(-(stop - start) // stride))  # ceil for either sign of the stride
            starts.append(start)
            counts.append(count)
        out_shape = list(graph.tensors[op.outputs[0]].shape)
        if [counts[k] for k in kept] != out_shape:
            raise TinyexitError(f"{graph.source}: STRIDED_SLICE '{name}' selects {[counts[k] for k in kept]}, "
                                f"its output has shape {out_shape}")
        return [gather(op.inputs[0], op.outputs[0], shape, starts, counts, strides)]


class SliceOp(MoveOp):
    @classmethod
    def plan_copies(cls, graph, op):
        shape = graph.tensors[op.inputs[0]].shape
        begin, size = constant_ints(graph, op, 1, "begin"), constant_ints(graph, op, 2, "size")
        size = [n - b if s == -1 else s for n, b, s in zip(shape, begin, size)]
        if any(b < 0 or s < 0 or b + s > n for n, b, s in zip(shape, begin, size)) or len(begin) != len(shape):
            raise TinyexitError(f"{graph.source}: SLICE '{graph.tensors[op.outputs[0]].name}' reaches outside its "
                                f"input {shape} (begin {begin}, size {size})")
        return [gather(op.inputs[0], op.outputs[0], shape, begin, size)]


class TransposeOp(MoveOp):
    @classmethod
    def plan_copies(cls, graph, op):
        shape = graph.tensors[op.inputs[0]].shape
        perm = [axis_of(graph, op, p, len(shape)) for p in constant_ints(graph, op, 1, "permutation")]
        if sorted(perm) != list(range(len(shape))):
            raise TinyexitError(f"{graph.source}: TRANSPOSE '{graph.tensors[op.outputs[0]].name}' has permutation "
                                f"{perm} for {len(shape)} dimensions")
        count = [shape[p] for p in perm]
        rm = row_major(shape)
        return [Copy(op.inputs[0], op.outputs[0], count, [rm[p] for p in perm], row_major(count))]


class ReverseOp(MoveOp):
    """REVERSE_V2: negative strides along the given axes."""

    @classmethod
    def plan_copies(cls, graph, op):
        shape = graph.tensors[op.inputs[0]].shape
        axes = {axis_of(graph, op, a, len(shape)) for a in constant_ints(graph, op, 1, "axis")}
        begin = [n - 1 if k in axes else 0 for k, n in enumerate(shape)]
        step = [-1 if k in axes else 1 for k in range(len(shape))]
        return [gather(op.inputs[0], op.outputs[0], shape, begin, shape, step)]


class TileOp(MoveOp):
    """TILE (Keras 3's UpSampling1D/2D lower to RESHAPE -> TILE -> RESHAPE). TFLite Micro has no TILE kernel:
    such models run here but not in TFLite Micro; tests compare with LiteRT's reference kernels."""

    @classmethod
    def plan_copies(cls, graph, op):
        shape = graph.tensors[op.inputs[0]].shape
        multiples = constant_ints(graph, op, 1, "multiples")
        count, in_stride = [], []
        for n, m, r in zip(shape, multiples, row_major(shape)):
            count += [m, n]  # each axis: `m` repeats (input stride 0) of its `n` elements
            in_stride += [0, r]
        return [Copy(op.inputs[0], op.outputs[0], count, in_stride, row_major(count))]


class SplitOp(MoveOp):
    """SPLIT (axis input 0, data input 1), SPLIT_V (data 0, sizes 1 with at most one -1, axis 2), UNPACK
    (axis in the options, the axis dropped from each output)."""

    @classmethod
    def plan_copies(cls, graph, op):
        data = op.inputs[1] if op.op == "SPLIT" else op.inputs[0]
        shape = graph.tensors[data].shape
        name = graph.tensors[op.outputs[0]].name
        if op.op == "UNPACK":
            axis = axis_of(graph, op, op.options.axis, len(shape))
            sizes = [1] * len(op.outputs)
        else:
            axis = axis_of(graph, op, constant_ints(graph, op, 0 if op.op == "SPLIT" else 2, "axis")[0], len(shape))
            if op.op == "SPLIT":
                sizes = [shape[axis] // len(op.outputs)] * len(op.outputs)
            else:
                sizes = constant_ints(graph, op, 1, "size_splits")
                if sizes.count(-1) == 1:
                    sizes[sizes.index(-1)] = shape[axis] - (sum(sizes) + 1)
        if sum(sizes) != shape[axis] or len(sizes) != len(op.outputs):
            raise TinyexitError(f"{graph.source}: {op.op} '{name}' splits {shape[axis]} values into {sizes}")
        copies, offset = [], 0
        for t, size in zip(op.outputs, sizes):
            begin = [offset if k == axis else 0 for k in range(len(shape))]
            count = [size if k == axis else n for k, n in enumerate(shape)]
            copies.append(gather(data, t, shape, begin, count))
            offset += size
        return copies


class ConcatenationOp(MoveOp):
    """CONCATENATION and PACK (stacking along a new axis): each input placed at its offset along the axis.
    TFLite Micro's int8 CONCATENATION does not requantize: it refuses inputs quantized differently from the
    output (the converter never emits them); its PACK copies values as they are."""

    @classmethod
    def plan_copies(cls, graph, op):
        out = graph.tensors[op.outputs[0]]
        if op.op == "CONCATENATION" and op.options.fusedActivationFunction != 0:
            raise TinyexitError(f"{graph.source}: CONCATENATION '{out.name}' has a fused activation (TFLite Micro "
                                f"refuses it)")
        if op.op == "CONCATENATION" and out.dtype == "int8":
            for t in op.inputs:
                i = graph.tensors[t]
                if (scale_of(i), zp_of(i)) != (scale_of(out), zp_of(out)):
                    raise TinyexitError(f"{graph.source}: CONCATENATION input '{i.name}' is quantized differently "
                                        f"from its output '{out.name}'; TFLite Micro refuses it (no requantization)")
        axis = axis_of(graph, op, op.options.axis, len(out.shape))
        copies, offset = [], 0
        for t in op.inputs:
            shape = list(graph.tensors[t].shape)
            if op.op == "PACK":
                shape.insert(axis, 1)
            if len(shape) != len(out.shape) or any(a != b for k, (a, b) in enumerate(zip(shape, out.shape))
                                                   if k != axis):
                raise TinyexitError(f"{graph.source}: {op.op} '{out.name}': input {graph.tensors[t].shape} does not "
                                    f"fit output {out.shape} along axis {axis}")
            copies.append(place(t, op.outputs[0], shape, out.shape, [offset if k == axis else 0
                                                                     for k in range(len(shape))]))
            offset += shape[axis]
        return copies


class PadOp(MoveOp):
    """PAD and PADV2: the output filled with the pad value (PAD: the output zero point; PADV2: its constant
    value input), then the input placed inside. Any number of dimensions; paddings must be constant (after
    folding) and non-negative."""

    @classmethod
    def plan_copies(cls, graph, op):
        inp, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        pads = constant_ints(graph, op, 1, "paddings")
        before, after = pads[0::2], pads[1::2]
        if (len(before) != len(inp.shape) or min(pads, default=0) < 0
                or [n + b + a for n, b, a in zip(inp.shape, before, after)] != list(out.shape)):
            raise TinyexitError(f"{graph.source}: {op.op} '{out.name}' pads {inp.shape} by {pads} into {out.shape}")
        return [place(op.inputs[0], op.outputs[0], inp.shape, out.shape, before)]

    @classmethod
    def fill_value(cls, graph, op):
        if op.op == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
            return constant_ints(graph, op, 2, "pad value")[0]
        out = graph.tensors[op.outputs[0]]
        return zp_of(out) if out.zero_point is not None else 0

    def weight_bytes(self) -> int:
        return 0  # the pad value is an immediate


class SpaceToDepthOp(MoveOp):
    """SPACE_TO_DEPTH and DEPTH_TO_SPACE (NHWC, TFLite's depth-column-row order): one transposing copy over the
    6-D view [n, h, block, w, block, c] of the spatial side."""

    @classmethod
    def plan_copies(cls, graph, op):
        b = op.options.blockSize
        inp, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        space, depth = (inp, out) if op.op == "SPACE_TO_DEPTH" else (out, inp)
        n, h, w, c = space.shape
        if len(depth.shape) != 4 or h % b or w % b or tuple(depth.shape) != (n, h // b, w // b, c * b * b):
            raise TinyexitError(f"{graph.source}: {op.op} '{out.name}' maps {inp.shape} to {out.shape} with block {b}")
        view = [n, h // b, b, w // b, b, c]  # the spatial tensor, row-major
        rm = row_major(view)
        order = [0, 1, 3, 2, 4, 5]  # the depth tensor's axes: [n, h / b, w / b, block y, block x, c]
        count = [view[k] for k in order]
        depth_strides = row_major(count)
        space_strides = [rm[k] for k in order]
        if op.op == "SPACE_TO_DEPTH":
            return [Copy(op.inputs[0], op.outputs[0], count, space_strides, depth_strides)]
        return [Copy(op.inputs[0], op.outputs[0], count, depth_strides, space_strides)]


class ResizeNearestOp(MoveOp):
    """RESIZE_NEAREST_NEIGHBOR with TFLite Micro's index arithmetic (float32 scale, floor or round half away
    from zero with align_corners, half-pixel centres), done here into per-row and per-column input offsets."""

    @classmethod
    def maps(cls, graph, op) -> tuple[list[int], list[int]]:
        inp, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        size = constant_ints(graph, op, 1, "size")
        if len(inp.shape) != 4 or len(size) != 2 or list(out.shape) != [inp.shape[0], *size, inp.shape[3]]:
            raise TinyexitError(f"{graph.source}: RESIZE_NEAREST_NEIGHBOR '{out.name}' resizes {inp.shape} to "
                                f"{out.shape} with size {size} (4-D NHWC only)")
        o = op.options
        _, in_h, in_w, depth = inp.shape
        rows = [y * in_w * depth for y in nearest(in_h, size[0], o.alignCorners, o.halfPixelCenters)]
        columns = [x * depth for x in nearest(in_w, size[1], o.alignCorners, o.halfPixelCenters)]
        return rows, columns

    @classmethod
    def copies(cls, graph, op):  # one copy per output pixel: for folding only
        rows, columns = cls.maps(graph, op)
        n, in_h, in_w, depth = graph.tensors[op.inputs[0]].shape
        copies = []
        for b in range(n):
            for y, row in enumerate(rows):
                for x, column in enumerate(columns):
                    start = ((b * len(rows) + y) * len(columns) + x) * depth
                    copies.append(Copy(op.inputs[0], op.outputs[0], [depth], [1], [1],
                                       b * in_h * in_w * depth + row + column, start))
        return copies

    def check(self):
        self.rows, self.columns = self.maps(self.graph, self.op)
        self.plan = []

    def definitions(self) -> str:
        n, in_h, in_w, depth = self.t(self.op.inputs[0]).shape
        return (c_array("int32_t", f"{self.name}_rows", np.array(self.rows)) +
                c_array("int32_t", f"{self.name}_columns", np.array(self.columns)) +
                f"static const ResizeNearestParams {self.name}_params = {{{n}, {in_h * in_w * depth}, "
                f"{len(self.rows)}, {len(self.columns)}, {depth}, {self.name}_rows, {self.name}_columns}};\n")

    def weight_bytes(self) -> int:
        return 4 * (len(self.rows) + len(self.columns))

    def call(self, ptr) -> str:
        return f"resize_nearest_neighbor_s8({self.name}_params, {ptr(self.op.inputs[0])}, {ptr(self.outputs[0])});"


def nearest(in_size: int, out_size: int, align_corners: bool, half_pixel_centers: bool) -> list[int]:
    """TFLite Micro's GetNearestNeighbor for every output index, in float32 as it computes."""
    f32 = np.float32
    if align_corners and out_size > 1:
        scale = f32(in_size - 1) / f32(out_size - 1)
    else:
        scale = f32(in_size) / f32(out_size)
    offset = f32(0.5) if half_pixel_centers else f32(0.0)
    result = []
    for i in range(out_size):
        v = (f32(i) + offset) * scale
        if align_corners:
            whole = np.floor(v)
            index = int(whole) + int(v - whole >= f32(0.5))  # std::round: halves away from zero (v >= 0)
        else:
            index = int(np.floor(v))
        index = min(index, in_size - 1)
        result.append(max(index, 0) if half_pixel_centers else index)
    return result


OPS = {"RESHAPE": ReshapeOp, "SQUEEZE": ReshapeOp, "EXPAND_DIMS": ReshapeOp, "STRIDED_SLICE": StridedSliceOp,
       "SLICE": SliceOp, "TRANSPOSE": TransposeOp, "REVERSE_V2": ReverseOp, "TILE": TileOp, "SPLIT": SplitOp,
       "SPLIT_V": SplitOp, "UNPACK": SplitOp, "CONCATENATION": ConcatenationOp, "PACK": ConcatenationOp,
       "PAD": PadOp, "PADV2": PadOp, "SPACE_TO_DEPTH": SpaceToDepthOp, "DEPTH_TO_SPACE": SpaceToDepthOp,
       "RESIZE_NEAREST_NEIGHBOR": ResizeNearestOp}
