"""Sub-byte (4- and 2-bit) weights: packed by codegen, unpacked by the firmware kernels on the fly, bit-exact
with TFLite Micro on the same int8 `.tflite`; fake quantization, export and the mixed-precision search."""

import re

import numpy as np
import pytest

from tinyexit.export import convert_int8
from tinyexit.firmware_build import build
from tinyexit.harness import firmware
from tinyexit.policy import NEVER
from tinyexit.qat import narrow_weights
from tinyexit.reference import StageInterpreter
from tinyexit.tflite_graph import Graph, WEIGHT_INPUT


def _single_op(kind: str, rng: np.random.Generator):
    import keras
    from keras import layers

    keras.utils.set_random_seed(int(rng.integers(1 << 30)))
    h, w = (int(v) for v in rng.integers(3, 10, 2))
    c = int(rng.choice([1, 3, 4, 8, 12]))  # multiples of 4 take the DSP kernels' grouped paths
    if kind == "depthwise" and rng.integers(2):
        c = 8  # depth multiplier 1 on 4k channels: the DSP depthwise kernel
    inp = keras.Input((h, w, c))
    act = str(rng.choice(["none", "relu"]))
    finish = {"none": lambda x: x, "relu": layers.ReLU()}[act]
    k = (int(rng.integers(1, min(h, 4) + 1)), int(rng.integers(1, min(w, 4) + 1)))
    padding, stride = str(rng.choice(["same", "valid"])), int(rng.integers(1, 3))
    if kind == "conv":
        out = layers.Conv2D(int(rng.integers(1, 10)), k, strides=stride, padding=padding,
                            use_bias=bool(rng.integers(2)))(inp)
    elif kind == "depthwise":
        out = layers.DepthwiseConv2D(k, strides=stride, padding=padding,
                                     depth_multiplier=1 if c == 8 else int(rng.integers(1, 3)))(inp)
    else:
        out = layers.Dense(int(rng.integers(1, 20)))(layers.Flatten()(inp))
    return keras.Model(inp, finish(out)), (h, w, c)


def _narrowed(kind, bits, rng):
    model, shape = _single_op(kind, rng)
    calibration = rng.normal(rng.uniform(-1, 1), rng.uniform(0.5, 3), (32, *shape)).astype(np.float32)
    buf = convert_int8(model, calibration)
    g = Graph(buf)
    names = {g.weight_tensor(op).name: bits for op in g.ops if op.op in WEIGHT_INPUT}
    return narrow_weights(buf, names), shape


def _filter_bytes(source: str) -> dict[str, int]:
    """Sizes of the generated filter arrays by layer (`_filter` portable, `_filter16`/`_filter4` DSP)."""
    sizes = {}
    for ctype, name, n in re.findall(r"static const (\w+) (\w+_filter\w*)\[(\d+)\]", source):
        sizes[name] = int(n) * {"int8_t": 1, "uint8_t": 1, "uint32_t": 4}[ctype]
    return sizes


def _chain(rng: np.random.Generator, depthwise: list[tuple[tuple[int, int], int]], first_channels: int,
           pointwise: bool = False):
    """conv -> depthwise layers (kernel, depth multiplier) [-> 1x1 conv] -> dense, random strides, paddings,
    biases and activations: every weighted kernel in one model, so one firmware build checks them all (a
    wrong value anywhere reaches the output)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(int(rng.integers(1 << 30)))
    h, w = (int(v) for v in rng.integers(5, 9, 2))
    inp = keras.Input((h, w, first_channels))
    act = lambda x: layers.ReLU()(x) if rng.integers(2) else x  # noqa: E731  clamping and not
    x = act(layers.Conv2D(int(rng.choice([4, 8, 12])), (int(rng.integers(1, 4)), int(rng.integers(1, 4))),
                          strides=int(rng.integers(1, 3)), padding=str(rng.choice(["same", "valid"])),
                          use_bias=bool(rng.integers(2)))(inp))
    for kernel, multiplier in depthwise:
        x = act(layers.DepthwiseConv2D(kernel, padding=str(rng.choice(["same", "valid"])) if multiplier > 1 else "same",
                                       depth_multiplier=multiplier, use_bias=bool(rng.integers(2)))(x))
    if pointwise:
        x = act(layers.Conv2D(8, 1)(x))
    out = layers.Dense(int(rng.integers(3, 20)))(layers.Flatten()(x))
    return keras.Model(inp, out), (h, w, first_channels)


def _narrowed_chain(rng, bits_of_layer, **kwargs):
    """The chain converted to int8 and every filter narrowed: bits_of_layer(index) -> 4 or 2."""
    model, shape = _chain(rng, **kwargs)
    buf = convert_int8(model, rng.normal(rng.uniform(-1, 1), rng.uniform(0.5, 3), (32, *shape)).astype(np.float32))
    g = Graph(buf)
    filters = [g.weight_tensor(op).name for op in g.ops if op.op in WEIGHT_INPUT]
    bits = {name: bits_of_layer(i) for i, name in enumerate(filters)}
    return narrow_weights(buf, bits), shape, bits


def _check_firmware(buf: bytes, shape, target: str, kernels: str, tmp_path, rng, samples: int = 8) -> str:
    """The model's firmware against TFLite Micro on random inputs, whole output tensors; returns model.cc."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "model.tflite"
    path.write_bytes(buf)
    reference = StageInterpreter(buf)
    x = rng.integers(-128, 128, (samples, *shape)).astype(np.int8)
    want = np.stack([reference(sample[None])[0].reshape(-1) for sample in x])
    assert len(np.unique(want, axis=0)) > 1, "degenerate model: every input gives the same output"
    fw = build(path, target, tmp_path / f"{target}-{kernels}", kernels=kernels)
    with firmware(target, fw.binary) as dev:
        got = np.stack([dev.infer(sample).output for sample in x])
    assert np.array_equal(got, want), f"{target} {kernels}: {np.argwhere(got != want)[:5].tolist()}"
    return (tmp_path / f"{target}-{kernels}" / "model.cc").read_text()


@pytest.mark.parametrize("bits", [4, 2])
def test_packed_kernels_match_tflite_micro(bits, tmp_path):
    """Every sub-byte kernel (conv grouped or not, depthwise with the DSP kernel's tap counts 9, 5, 3 and any,
    depth multiplier 2 on the portable kernel, dense), portable and DSP (emulated on the host)."""
    rng = np.random.default_rng(bits)
    cases = [dict(depthwise=[((3, 3), 1), ((5, 1), 1), ((1, 3), 1)], first_channels=int(rng.choice([1, 3]))),
             dict(depthwise=[((2, 2), 1), ((3, 3), 2)], first_channels=int(rng.choice([4, 8])))]
    for case, kwargs in enumerate(cases):
        buf, shape, _ = _narrowed_chain(rng, lambda i: bits, **kwargs)
        g = Graph(buf)
        lo, hi = {4: (-8, 7), 2: (-2, 1)}[bits]
        filters = [g.weight_tensor(op) for op in g.ops if op.op in WEIGHT_INPUT]
        assert all(w.dtype == "int8" and lo <= w.data.min() and w.data.max() <= hi for w in filters)
        for kernels in ("portable", "dsp"):
            source = _check_firmware(buf, shape, "host", kernels, tmp_path / f"{case}", rng)
            if kernels == "portable":  # 1/2 or 1/4 of the int8 bytes
                sizes = [n for name, n in _filter_bytes(source).items() if name.endswith("_filter")]
                assert sorted(sizes) == sorted(-(-w.data.size * bits // 8) for w in filters)
            else:  # the DSP kernels, each layer calling its own template variant
                assert {"conv", "depthwise_conv"} <= set(re.findall(r"dsp::(\w+)_packed_s8<", source))


def test_packed_dsp_kernels_on_qemu_m4(tmp_path):
    """The hand-written Cortex-M4 blocks themselves (the host runs their C++ emulation): 4- and 2-bit depthwise
    unrolled for 9, 5 and 3 taps and the loop for other counts, and both GEMM loops, on the emulated M4."""
    rng = np.random.default_rng(7)
    depthwise = [((3, 3), 1), ((3, 3), 1), ((5, 1), 1), ((5, 1), 1), ((3, 1), 1), ((1, 3), 1), ((2, 2), 1), ((1, 2), 1)]
    buf, shape, widths = _narrowed_chain(rng, lambda i: (4, 2)[i % 2], depthwise=depthwise, first_channels=3,
                                         pointwise=True)
    assert set(widths.values()) == {4, 2}
    source = _check_firmware(buf, shape, "qemu-m4", "auto", tmp_path, rng, samples=6)
    variants = set(re.findall(r"dsp::(\w+_packed_s8<[^>]*>)", source))
    for bits in (4, 2):
        assert any(v.startswith(f"conv_packed_s8<{bits},") for v in variants), variants
        for taps in (9, 5, 3, 0):
            assert any(v.startswith(f"depthwise_conv_packed_s8<{bits}, {taps},") for v in variants), (bits, taps)


def test_fake_quantized_layers_export_exactly_onto_their_grid(tmp_path):
    """The converter quantizes every filter to max|w| / 127; narrow_weights must recover the fake-quant grid
    exactly (same real weights, batch norm folded in) with values in the sub-byte range."""
    import keras
    from keras import layers

    from tinyexit.qat import LEVELS, quantized_copy, weight_tensor_bits

    keras.utils.set_random_seed(1)
    inp = keras.Input((12, 1, 4))
    x = layers.ReLU()(layers.BatchNormalization(name="bn1")(layers.Conv2D(8, (3, 1), use_bias=False, name="conv")(inp)))
    x = layers.ReLU()(layers.BatchNormalization(name="bn2")(layers.DepthwiseConv2D((3, 1), use_bias=False, name="dw")(x)))
    out = layers.Dense(5, name="dense")(layers.Flatten()(x))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for bn in ("bn1", "bn2"):  # batch norm with non-trivial statistics (and a negative gamma) to fold
        gamma, beta, mean, var = (w.copy() for w in model.get_layer(bn).get_weights())
        gamma = rng.uniform(0.5, 2, gamma.shape) * np.where(np.arange(len(gamma)) == 1, -1, 1)
        model.get_layer(bn).set_weights([gamma, rng.normal(0, 0.1, beta.shape), rng.normal(0, 0.1, mean.shape),
                                         rng.uniform(0.5, 2, var.shape)])
    bits = {"conv": 4, "dw": 2, "dense": 4}
    q = quantized_copy(model, bits)
    buf = convert_int8(q, rng.normal(0, 1, (32, 12, 1, 4)).astype(np.float32))
    names = weight_tensor_bits(Graph(buf), bits)
    g = Graph(narrow_weights(buf, names))
    by_name = {t.name: t for t in g.tensors}
    for layer, b in bits.items():
        w = by_name[next(n for n, v in names.items() if layer in n)]
        assert np.abs(w.data).max() <= LEVELS[b]
        kernel = keras.ops.convert_to_numpy(q.get_layer(layer).quantized_kernel())
        bn = {"conv": "bn1", "dw": "bn2"}.get(layer)
        fold = 1.0
        if bn:
            gamma, _, _, var = q.get_layer(bn).get_weights()
            fold = gamma / np.sqrt(var + q.get_layer(bn).epsilon)
            fold = fold.reshape(-1, 1) if layer == "dw" else fold  # depthwise: (in channel, multiplier)
        real = (kernel * fold).reshape(-1, kernel.shape[-2] * kernel.shape[-1] if layer == "dw" else kernel.shape[-1])
        tflite = w.data.astype(np.float64) * w.scale.reshape((-1,) + (1,) * (w.data.ndim - 1) if w.quantized_dimension == 0 else -1)
        tflite = tflite.reshape(-1, real.shape[-1]) if layer == "dw" else tflite.reshape(real.shape[-1], -1).T
        np.testing.assert_allclose(tflite, real, rtol=1e-5, atol=1e-7 * np.abs(real).max())
        for c in range(real.shape[-1]):  # every channel uses its whole grid: the scale is the grid's step
            channel = w.data.reshape(-1, real.shape[-1])[:, c] if layer == "dw" else w.data.reshape(real.shape[-1], -1)[c]
            assert np.abs(channel).max() in (0, LEVELS[b])


def test_quantize_command_bad_input(tmp_path, har_model):
    from tests.conftest import assert_one_line_error, run_cli

    assert_one_line_error(run_cli("quantize", str(tmp_path / "missing"), "--flash-kb", "4"), "no such folder")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "manifest.json").write_text("{}")
    assert_one_line_error(run_cli("quantize", str(lone), "--flash-kb", "4"), "without the trained model")
    assert_one_line_error(run_cli("quantize", str(har_model[2]), "--flash-kb", "0"), "positive")
    assert_one_line_error(run_cli("demo", "--bits", "mixed", "--task", "vww", "--out", str(tmp_path / "v")), "retrofitted")


def test_quantize_command_meets_the_budget_and_the_firmware_matches(tmp_path, har_model, har):
    """`tinyexit quantize` on the small HAR model: widths within the budget in the manifest, the mixed stages
    and their stock-TFLite-Micro INT4 twin run bit-exact through the firmware."""
    import json

    from tests.conftest import run_cli
    from tinyexit import manifest as mf
    from tinyexit.reference import all_exit_logits, quantize_input

    out = tmp_path / "mixed"
    proc = run_cli("quantize", str(har_model[2]), "--flash-kb", "6", "--qat-epochs", "1", "--out", str(out),
                   "--int4-packed")
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = mf.read(out / "export")
    nbytes = sum(v for s in m["stages"] for k, v in s["weight_bytes"].items() if k != "bias")
    assert nbytes <= 6 * 1024
    widths = {row["weight_bits"] for row in m["layers"] if row["weight_bits"]}
    assert widths & {4, 2} and widths <= {8, 4, 2}
    search = json.loads((out / "search.json").read_text())
    assert search["chosen"]["weight_bytes"] == nbytes
    assert (out / "bits_pareto.png").stat().st_size > 10_000
    int4 = mf.read(out / "export-int4")
    assert any(r["weight_dtype"] == "int4" for r in int4["layers"])
    x = quantize_input(m, har.test.x[:40])
    for export in (out / "export", out / "export-int4"):
        manifest = mf.read(export)
        want = all_exit_logits(manifest, x)
        for kernels in ("portable", "dsp"):
            fw = build(export, "host", tmp_path / f"fw-{export.name}", kernels=kernels)
            with firmware("host", fw.binary) as dev:
                for exit_index, thresholds in ((0, {0: 0}), (1, {0: NEVER})):
                    dev.set_policy(thresholds)
                    got = np.stack([dev.infer(sample).output for sample in x])
                    assert np.array_equal(got, want[exit_index]), f"{export.name} ({kernels}) exit {exit_index}"


@pytest.mark.slow
def test_demo_bits_mixed_end_to_end(tmp_path, datasets):
    """`tinyexit demo --task har --bits mixed` as a user runs it, kept short (2 epochs, 1 QAT epoch, 20 test
    windows on the firmware): the report's keys, the budget, the widths in the manifest, and both firmware runs
    (mixed and its int8 twin) bit-exact with TFLite Micro on the emulated Cortex-M4."""
    import json

    from tests.conftest import run_cli
    from tinyexit import manifest as mf

    proc = run_cli("demo", "--task", "har", "--bits", "mixed", "--data", str(datasets / "har" / "HAPT.tar.xz"),
                   "--epochs", "2", "--exits-after", "2", "--qat-epochs", "1", "--agreement-samples", "20",
                   "--firmware-samples", "20", "--out", str(tmp_path), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    int8 = json.loads((tmp_path / "int8" / "report.json").read_text())
    assert {"weight_bytes", "int8_weight_bytes", "bits_per_layer", "all8_early_exit_accuracy",
            "all8_instructions_mean", "instructions_mean", "int8_early_exit_accuracy"} <= set(report)
    assert report["bits"] == "mixed" and report["flash_budget_bytes"] == report["int8_weight_bytes"] // 2
    assert 0 < report["weight_bytes"] <= report["flash_budget_bytes"]
    widths = report["bits_per_layer"]
    assert set(widths.values()) <= {8, 4, 2} and set(widths.values()) & {4, 2}
    manifest = mf.read(tmp_path / "export")
    assert sorted(r["weight_bits"] for r in manifest["layers"] if r.get("weight_bits")) == sorted(widths.values())
    # the all-8-bit figures are the int8 run's own
    assert report["all8_early_exit_accuracy"] == int8["int8_early_exit_accuracy"]
    assert report["all8_instructions_mean"] == int8["instructions_mean"]
    for r in (report, int8):  # every firmware decision and class equal TFLite Micro's
        assert r["firmware_mismatches_vs_tflm"] == 0 and r["firmware_samples"] == 20
    # the bar on instructions, and flash: packed filters and only the kernel variants used
    assert report["instructions_all_stages"] <= 1.3 * report["all8_instructions_all_stages"]
    assert 0 < report["firmware_text_rodata_bytes"] < report["all8_firmware_text_rodata_bytes"]
    assert (tmp_path / "bits_pareto.png").stat().st_size > 10_000
    assert "mixed:" in proc.stdout and "weight bytes" in proc.stdout


def test_streamed_subbyte_kernels_on_qemu_m4(tmp_path):
    """The streamed sub-byte kernels' assembly (dsp/gemm_stream.cc, dsp/depthwise_stream.cc) at 4 and 2 bits:
    layers whose channels all shift right, which narrowed layers do when their outputs are wide (large
    biases here), on the emulated M4 against TFLite Micro, whole output tensors."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    inp = keras.Input((7, 6, 3))
    chain = [layers.Conv2D(8, 3, padding="same", name="conv"), layers.DepthwiseConv2D(3, padding="same", name="dw9"),
             layers.DepthwiseConv2D((5, 1), padding="same", name="dw5"),
             layers.DepthwiseConv2D((1, 3), padding="same", name="dw3"), layers.Conv2D(8, 1, name="pw")]
    x = inp
    for layer in chain:
        x = layer(x)
    dense = layers.Dense(6, name="dense")
    model = keras.Model(inp, dense(layers.Flatten()(x)))
    for layer in chain + [dense]:  # wide outputs: small requantization multipliers even after narrowing
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, rng.uniform(-40, 40, bias.shape).astype(np.float32)])
    buf = convert_int8(model, rng.normal(0, 1, (32, 7, 6, 3)).astype(np.float32))
    g = Graph(buf)
    filters = [g.weight_tensor(op).name for op in g.ops if op.op in WEIGHT_INPUT]
    for bits in (4, 2):
        narrowed = narrow_weights(buf, {name: bits for name in filters})
        source = _check_firmware(narrowed, (7, 6, 3), "qemu-m4", "auto", tmp_path / f"{bits}", rng, samples=6)
        streamed = []  # the kernel of each streamed layer at this width (GEMM params: k, k_padded, bits, ...)
        for kind, fields in re.findall(r"static const (\w+)PackedDspParams \w+ = \{(.*_stream)\};", source):
            if int(fields.split(", ")[2 if kind == "Gemm" else 0]) == bits:
                streamed.append(kind)
        assert "Gemm" in streamed and streamed.count("Depthwise") == 3, (bits, streamed)  # 9, 5 and 3 taps
