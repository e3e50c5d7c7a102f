"""Feature codecs (firmware/runtime/codec, tinyexit/edge/codec.py): round trips, C++ == Python byte for byte,
malformed streams refused without over-reading, lossless >= 2x on a real post-ReLU cut, an arm-none-eabi build."""

import csv
import importlib.util
import io
import shutil
import tarfile
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyexit.edge import codec
from tinyexit.edge.codec import CodecError, Kind, Params

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
CODEC_SOURCES = sorted((FIRMWARE / "runtime" / "codec").glob("*.cc"))
EXAMPLE = ROOT / "examples" / "har-tiny" / "export"
FLAGS = ["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-fno-exceptions", "-fno-rtti",
         f"-I{FIRMWARE / 'include'}"]

# Reads records from stdin: op u8 (0 encode, 1 decode), kind u8, zero point i8, shift i8, signed codes u8,
# n i32, capacity i32, payload length i32, payload; answers each with result i32 and the bytes produced
# (encode: the stream; decode: n values). Decode input is copied to a buffer of exactly its size, so the
# address sanitizer catches any read past it.
DRIVER = r"""
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <vector>
#include "tinyexit/codec.h"
using namespace tx::codec;
static bool read_all(void* p, size_t n) { return std::fread(p, 1, n, stdin) == n; }
int main() {
  for (;;) {
    uint8_t head[5]; int32_t sizes[3];
    if (!read_all(head, 5) || !read_all(sizes, 12)) return 0;
    std::vector<uint8_t> payload(sizes[2]);
    if (sizes[2] && !read_all(payload.data(), payload.size())) return 1;
    Params p{static_cast<Kind>(head[1]), static_cast<int8_t>(head[2]), static_cast<int8_t>(head[3])};
    p.signed_codes = head[4] != 0;
    const int32_t n = sizes[0], capacity = sizes[1];
    int32_t result;
    std::vector<uint8_t> out;
    if (head[0] == 0) {
      out.resize(capacity > 0 ? capacity : 1);
      result = encode(p, reinterpret_cast<const int8_t*>(payload.data()), n, out.data(), capacity);
      out.resize(result > 0 ? result : 0);
    } else {
      std::vector<uint8_t> in(payload);  // exactly sized
      out.resize(n > 0 ? n : 1);
      result = decode(p, in.data(), static_cast<int32_t>(in.size()), reinterpret_cast<int8_t*>(out.data()), n);
      out.resize(result >= 0 ? n : 0);
    }
    const int32_t max = max_encoded_bytes(p, n);
    std::fwrite(&result, 4, 1, stdout);
    std::fwrite(&max, 4, 1, stdout);
    if (!out.empty()) std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  }
}
"""


class Driver:
    """The C++ codecs in one host process, asked many questions over a pipe."""

    def __init__(self, binary: Path):
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _ask(self, op: int, p: Params, n: int, capacity: int, payload: bytes) -> tuple[int, int, bytes]:
        self.proc.stdin.write(struct.pack("<BBbbBiii", op, int(p.kind), p.zero_point, p.shift, p.signed_codes,
                                          n, capacity, len(payload)) + payload)
        self.proc.stdin.flush()
        result, max_bytes = struct.unpack("<ii", self.proc.stdout.read(8))
        size = result if op == 0 else n
        return result, max_bytes, self.proc.stdout.read(size) if result > 0 or (op == 1 and result >= 0) else b""

    def encode(self, p: Params, x: np.ndarray, capacity: int) -> tuple[int, bytes]:
        result, _, out = self._ask(0, p, x.size, capacity, x.astype(np.int8).tobytes())
        return result, out

    def decode(self, p: Params, stream: bytes, n: int) -> tuple[int, np.ndarray]:
        result, _, out = self._ask(1, p, n, 0, stream)
        return result, np.frombuffer(out, np.int8)

    def max_bytes(self, p: Params, n: int) -> int:
        return self._ask(1, p, n, 0, b"")[1]

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def cpp(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codec_driver")
    (folder / "driver.cc").write_text(DRIVER)
    binary = folder / "driver"
    subprocess.run(["g++", *FLAGS, "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    str(folder / "driver.cc"), *map(str, CODEC_SOURCES), "-o", str(binary)], check=True)
    driver = Driver(binary)
    yield driver
    driver.close()


def post_relu_like(rng: np.random.Generator, n: int, zero_point: int, zero_share: float) -> np.ndarray:
    """Values at zero_point with probability zero_share, else zero_point + a geometric-ish distance."""
    d = np.minimum(rng.geometric(0.08, n), 127 - zero_point)
    return np.where(rng.random(n) < zero_share, zero_point, zero_point + d).astype(np.int8)


params_strategy = st.builds(
    Params, st.sampled_from(list(Kind)), st.integers(-128, 127), st.integers(0, 8), st.booleans())


@st.composite
def tensors(draw):
    n = draw(st.integers(0, 300))
    zero_point = draw(st.integers(-128, 127))
    style = draw(st.sampled_from(["sparse", "dense", "constant", "extremes"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if style == "sparse":
        x = post_relu_like(rng, n, zero_point, draw(st.floats(0.0, 1.0)))
    elif style == "dense":
        x = rng.integers(-128, 128, n).astype(np.int8)
    elif style == "constant":
        x = np.full(n, zero_point, np.int8)
    else:
        x = rng.choice(np.array([-128, 127, zero_point], np.int8), n)
    return zero_point, x


@settings(max_examples=300, deadline=None)
@given(tensors(), params_strategy)
def test_python_round_trip(tensor, p):
    zero_point, x = tensor
    p = Params(p.kind, zero_point, p.shift, p.signed_codes)
    stream = codec.encode(p, x)
    assert len(stream) <= codec.max_encoded_bytes(p, x.size)
    y, used = codec.decode(p, stream + b"\x5a\xa5", x.size)  # trailing bytes are not consumed
    assert used == len(stream)
    if p.kind in (Kind.RAW, Kind.LOSSLESS):
        assert np.array_equal(y, x)
    else:
        bits = codec.BITS[p.kind]
        assert np.array_equal(y, codec.dequantize(p, codec.requantize(p, bits, x)))
        # the zero point survives exactly; inside the code range the error is at most half a step
        assert np.all(y[x == zero_point] == zero_point)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if p.signed_codes else (0, (1 << bits) - 1)
        d = x.astype(np.int32) - zero_point
        inside = ((d >= lo << p.shift) & (d <= hi << p.shift)
                  & (zero_point + (d >> p.shift << p.shift) + (1 << p.shift) <= 127))
        assert np.all(np.abs(y[inside].astype(np.int32) - x[inside]) <= (1 << p.shift) // 2)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensors(), params_strategy, st.integers(0, 20))
def test_cpp_and_python_write_and_read_the_same_bytes(cpp, tensor, p, short_by):
    zero_point, x = tensor
    p = Params(p.kind, zero_point, p.shift, p.signed_codes)
    want = codec.encode(p, x)
    assert cpp.max_bytes(p, x.size) == codec.max_encoded_bytes(p, x.size)
    result, got = cpp.encode(p, x, codec.max_encoded_bytes(p, x.size))
    assert result == len(got) and got == want
    decoded, used = codec.decode(p, want, x.size)
    result, cpp_decoded = cpp.decode(p, want, x.size)
    assert result == used and np.array_equal(cpp_decoded, decoded)
    # too little room: -1 in C++, CodecError in Python, exactly when the stream does not fit
    capacity = max(len(want) - 1 - short_by, 0)
    result, _ = cpp.encode(p, x, capacity)
    assert result == -1 or len(want) <= capacity
    if len(want) > capacity:
        with pytest.raises(CodecError):
            codec.encode(p, x, capacity)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensors(), st.sampled_from(list(Kind)), st.data())
def test_truncated_and_corrupt_streams_are_refused_never_overread(cpp, tensor, kind, data):
    """Any byte string: both sides agree (values or refusal); a stream cut before its end is refused."""
    zero_point, x = tensor
    p = Params(kind, zero_point, 3)
    stream = bytearray(codec.encode(p, x))
    if stream and x.size:
        cut = data.draw(st.integers(0, len(stream) - 1))
        result, _ = cpp.decode(p, bytes(stream[:cut]), x.size)
        assert result == -1
        with pytest.raises(CodecError):
            codec.decode(p, bytes(stream[:cut]), x.size)
    # corrupt: flip bytes (or replace the stream) and compare the two decoders
    if stream and data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 4))):
            stream[data.draw(st.integers(0, len(stream) - 1))] ^= data.draw(st.integers(1, 255))
    else:
        stream = bytearray(data.draw(st.binary(max_size=64)))
    result, got = cpp.decode(p, bytes(stream), x.size)
    try:
        want, used = codec.decode(p, bytes(stream), x.size)
    except CodecError:
        assert result == -1
    else:
        assert result == used <= len(stream) and np.array_equal(got, want)


def test_lossless_refuses_known_bad_streams():
    p = Params(Kind.LOSSLESS, -128)
    for stream, why in [(b"", "empty"), (b"\x03", "unknown mode"), (b"\x02\x00", "stored, too short"),
                        (b"\x00\x01", "block flag set, then the stream ends"),
                        (b"\x00" + bytes([0b0001]) + b"\x00" * 9, "flag set, empty zero map")]:
        with pytest.raises(CodecError):
            codec.decode(p, stream, 64)
    # mode 0 codes x - zero_point >= 1; read with another zero point, 100 + 100 is past 127: refused
    x = np.array([0, 100] * 32, np.int8)
    stream = codec.encode(Params(Kind.LOSSLESS, 0), x)
    assert stream[0] == codec.MODE_UNSIGNED
    with pytest.raises(CodecError):
        codec.decode(Params(Kind.LOSSLESS, 100), stream, x.size)


def test_lossless_falls_back_to_storing_noise():
    x = np.random.default_rng(0).integers(-128, 128, 1000).astype(np.int8)
    stream = codec.encode(Params(Kind.LOSSLESS, 0), x)
    assert stream[0] == codec.MODE_STORED and len(stream) == 1001


def test_requantization_of_a_post_relu_map_keeps_zeros_and_rounds_half_up():
    p = Params(Kind.REQUANT4, -128, 2)
    x = np.array([-128, -127, -126, -125, -124, -122, 127], np.int8)  # d = 0, 1, 2, 3, 4, 6, 255
    assert codec.requantize(p, 4, x).tolist() == [0, 0, 1, 1, 1, 2, 15]
    assert codec.encode(p, x) == bytes([0x00, 0x11, 0x21, 0x0F])
    assert codec.decode(p, codec.encode(p, x), 7)[0].tolist() == [-128, -128, -124, -124, -124, -120, -68]


def test_calibrated_shift_minimises_the_error():
    rng = np.random.default_rng(1)
    x = post_relu_like(rng, 20000, -128, 0.5)
    chosen = codec.calibrate_shift(x, -128, 4)
    assert not chosen.signed_codes and chosen.kind == Kind.REQUANT4
    def error(shift):
        p = Params(Kind.REQUANT4, -128, shift)
        return np.mean((codec.decode(p, codec.encode(p, x), x.size)[0].astype(np.int32) - x) ** 2)
    assert all(error(chosen.shift) <= error(s) for s in range(9))
    assert codec.calibrate_shift(rng.integers(-128, 128, 100).astype(np.int8), 0, 2).signed_codes


def kws_post_relu_cuts(datasets: Path, samples: int) -> list[tuple[str, np.ndarray, int]]:
    """Real post-ReLU cuts: every activation of MLPerf Tiny's KWS reference model (DS-CNN) on the first kws01
    inputs, read through LiteRT's reference kernels (bit-exact with TFLite Micro) with intermediates kept."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with tarfile.open(datasets / "kws" / "mlperf_kws01.tar.xz") as tar:
        files = {m.name.rsplit("/", 1)[-1]: tar.extractfile(m).read() for m in tar if m.isfile()}
    rows = [r for r in csv.reader(io.StringIO(files["y_labels.csv"].decode())) if r][:samples]
    model = Interpreter(model_path=str(datasets / "models" / "mlperf_kws_ref_model_int8.tflite"),
                        experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                        experimental_preserve_all_tensors=True)
    model.allocate_tensors()
    tensors = {t["index"]: t for t in model.get_tensor_details()}
    relu = [tensors[op["outputs"][0]] for op in model._get_ops_details()
            if "Relu" in tensors[op["outputs"][0]]["name"]]
    cuts = {t["index"]: [] for t in relu}
    for row in rows:
        x = np.frombuffer(files[row[0]], np.int8).reshape(1, 49, 10, 1)
        model.set_tensor(model.get_input_details()[0]["index"], x)
        model.invoke()
        for index, found in cuts.items():
            found.append(model.get_tensor(index).reshape(-1).copy())
    return [(t["name"].split(";")[0], np.stack(cuts[t["index"]]), int(t["quantization"][1])) for t in relu]


@pytest.fixture(scope="module")
def kws_cuts(datasets):
    return kws_post_relu_cuts(datasets, 12)


def test_lossless_at_least_halves_every_real_post_relu_cut(kws_cuts, cpp):
    assert len(kws_cuts) == 9  # the DS-CNN's nine ReLU activations, 25 x 5 x 64 each
    for name, cuts, zero_point in kws_cuts:
        report = codec.measure(cuts, zero_point)
        lossless = report.codecs["LOSSLESS"]
        assert report.zero_fraction > 0.3 and lossless.ratio >= 2.0, (name, report)
        assert lossless.rmse == 0 and report.codecs["REQUANT4"].ratio == pytest.approx(2.0)
        # sparse, low entropy: lossless is chosen, unless the link budget asks for fewer bytes
        assert report.entropy_bits <= codec.ENTROPY_THRESHOLD_BITS
        assert codec.choose(report).kind == Kind.LOSSLESS
        assert codec.choose(report, max_bytes_per_sample=lossless.bytes_per_sample - 1).kind in BITS_KINDS
    # the firmware writes the same streams for these cuts
    name, cuts, zero_point = kws_cuts[-1]
    p = Params(Kind.LOSSLESS, zero_point)
    for row in cuts[:4]:
        assert cpp.encode(p, row, codec.max_encoded_bytes(p, row.size))[1] == codec.encode(p, row)


def test_a_dense_map_is_requantized():
    dense = np.random.default_rng(2).integers(-128, 128, (16, 512)).astype(np.int8)
    report = codec.measure(dense, 0)
    assert report.entropy_bits > 7.9 and report.codecs["LOSSLESS"].ratio < 1
    assert codec.choose(report).kind == Kind.REQUANT4
    assert codec.choose(report, max_bytes_per_sample=200).kind == Kind.REQUANT2


BITS_KINDS = (Kind.REQUANT4, Kind.REQUANT2)


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm not installed")
def test_cortex_m4_writes_the_python_bytes_at_a_bounded_instruction_cost(kws_cuts):
    """bench/codecs.py's timing firmware on qemu-m4: real KWS cuts through every codec, same bytes as Python."""
    spec = importlib.util.spec_from_file_location("bench_codecs", ROOT / "bench" / "codecs.py")  # not stdlib codecs
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    name, cuts, zero_point = kws_cuts[-1]
    # the real cut (whole blocks: the DSP scan), then one with values below the zero point late in the
    # tensor (zigzag mode after a restart) and a partial last block
    assert zero_point == -128  # nothing lies below it: move the second map up by 20 to make room
    mixed = np.clip(cuts[1][:7990].astype(np.int32) + 20, -128, 127).astype(np.int8)
    mixed[7000:7010] = -128
    for cut, zero_point in ((cuts[0], zero_point), (mixed, zero_point + 20)):
        rows = bench.qemu_instructions(cut, zero_point, {2: 3, 3: 4})
        assert [r["codec"] for r in rows] == ["RAW", "LOSSLESS", "REQUANT4", "REQUANT2"]
        for row, p in zip(rows, [Params(Kind.RAW, zero_point), Params(Kind.LOSSLESS, zero_point),
                                 Params(Kind.REQUANT4, zero_point, 3), Params(Kind.REQUANT2, zero_point, 4)]):
            stream = codec.encode(p, cut)
            assert row["bytes"] == row["consumed"] == len(stream) and row["fnv1a"] == bench.fnv1a(stream), row
            assert row["exact"] == ("yes" if p.kind in (Kind.RAW, Kind.LOSSLESS) else "lossy")
        if cut is mixed:
            assert codec.encode(Params(Kind.LOSSLESS, zero_point), cut)[0] == codec.MODE_ZIGZAG
            continue
        # instruction counts repeat exactly under -icount: bounds above today's encode figures (22.8 / 6.5 / 11.0)
        per_byte = {r["codec"]: r["encode_per_byte"] for r in rows}
        assert per_byte["LOSSLESS"] < 30 and per_byte["REQUANT4"] < 10 and per_byte["REQUANT2"] < 15, rows


@pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None, reason="arm-none-eabi-g++ not installed")
def test_codecs_compile_for_cortex_m4_without_heap_or_float(tmp_path):
    objects = []
    for source in CODEC_SOURCES:
        obj = tmp_path / (source.stem + ".o")
        subprocess.run(["arm-none-eabi-g++", *FLAGS, "-O2", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft",
                        "-c", str(source), "-o", str(obj)], check=True)
        objects.append(str(obj))
    symbols = subprocess.run(["arm-none-eabi-nm", "-u", *objects], capture_output=True, text=True, check=True).stdout
    undefined = {line.split()[-1] for line in symbols.splitlines() if line.strip().startswith("U")}
    # no allocation and no soft-float helpers (__aeabi_f*/d*) are pulled in
    assert not {s for s in undefined if "malloc" in s or s.startswith(("_Znw", "__aeabi_f", "__aeabi_d"))}, undefined
