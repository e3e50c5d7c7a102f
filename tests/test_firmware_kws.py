"""MLPerf Tiny's KWS reference model (DS-CNN, plain .tflite) through the firmware, on the 1,000 kws01 inputs."""

import csv
import io
import tarfile

import numpy as np
import pytest

from tinyexit.firmware_build import build
from tinyexit.harness import firmware
from tinyexit.reference import StageInterpreter


@pytest.fixture(scope="module")
def kws01(datasets):
    with tarfile.open(datasets / "kws" / "mlperf_kws01.tar.xz") as tar:
        files = {m.name.rsplit("/", 1)[-1]: tar.extractfile(m).read() for m in tar if m.isfile()}
    rows = [r for r in csv.reader(io.StringIO(files["y_labels.csv"].decode())) if r]
    x = np.stack([np.frombuffer(files[r[0]], np.int8).reshape(49, 10, 1) for r in rows])
    return x, np.array([int(r[2]) for r in rows])


@pytest.fixture(scope="module")
def reference(datasets, kws01):
    model = datasets / "models" / "mlperf_kws_ref_model_int8.tflite"
    run = StageInterpreter(model.read_bytes())
    return model, np.stack([run(x[None])[0].reshape(-1) for x in kws01[0]])


MACS = 2_656_768
TFLM_ARENA_BYTES = 22_772  # TFLite Micro's arena_used_bytes() for this model on qemu-m4 (DEVELOPERS.md)


@pytest.mark.parametrize("kernels", ["portable", "dsp"])
def test_host_firmware_equals_tflite_micro_on_all_kws01_inputs(reference, kws01, tmp_path, kernels):
    model, want = reference
    fw = build(model, "host", tmp_path, kernels=kernels)  # dsp: the Cortex-M DSP kernels, emulated
    # one plan for both kernel sets: in-place depthwise and 1x1 layers keep one 8,000-byte activation live
    assert fw.arena_bytes <= TFLM_ARENA_BYTES * 6 // 10
    with firmware("host", fw.binary) as dev:
        got = np.stack([dev.infer(x).output for x in kws01[0]])
    assert np.array_equal(got, want)
    accuracy = float((got.argmax(1) == kws01[1]).mean())
    assert accuracy == float((want.argmax(1) == kws01[1]).mean()) == pytest.approx(0.901, abs=1e-9)


@pytest.mark.slow
def test_qemu_m4_dsp_firmware_equals_tflite_micro_on_kws01_within_1_instruction_per_mac(reference, kws01, tmp_path):
    model, want = reference
    fw = build(model, "qemu-m4", tmp_path)  # the M4 has the DSP extension: SMLAD kernels by default
    with firmware("qemu-m4", fw.binary) as dev:
        runs = [dev.infer(kws01[0][i]) for i in range(100)]
        again = dev.infer(kws01[0][0])
    assert np.array_equal(np.stack([r.output for r in runs]), want[:100])
    assert again.stage_cycles == runs[0].stage_cycles  # -icount: counts repeat exactly
    per_mac = max(r.stage_cycles[0] for r in runs) / MACS
    assert 0.5 < per_mac <= 1.0, per_mac


@pytest.mark.slow
def test_qemu_m4_portable_kernels_give_the_dsp_kernels_bits(reference, kws01, tmp_path):
    model, want = reference
    fw = build(model, "qemu-m4", tmp_path, kernels="portable")
    with firmware("qemu-m4", fw.binary) as dev:
        runs = [dev.infer(kws01[0][i]) for i in range(12)]
    assert np.array_equal(np.stack([r.output for r in runs]), want[:12])
    per_mac = runs[0].stage_cycles[0] / MACS
    assert 5 < per_mac < 30, per_mac  # plain C: several instructions per MAC
