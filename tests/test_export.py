import json

import numpy as np
import pytest

from tinyexit import manifest as mf
from tinyexit.errors import TinyexitError
from tinyexit.reference import StageInterpreter, quantize_input
from tinyexit.tflite_graph import Graph


def test_manifest_describes_every_stage(har_model):
    _, spec, export_dir = har_model
    m = mf.read(export_dir)
    assert m["format"] == mf.FORMAT and m["version"] == mf.VERSION and m["classes"] == spec.classes
    assert m["input"]["dtype"] == "int8" and m["input"]["shape"] == [1, 128, 1, 9]
    assert m["input"]["preprocessing"]["normalize"]["mean"]
    assert len(m["stages"]) == 2 and len(m["exits"]) == 2
    for s in m["stages"]:
        g = Graph.load(export_dir / s["file"])
        assert s["sha256"] == g.sha256() and s["macs"] == g.total_macs() > 0
        assert all(t["dtype"] == "int8" for t in s["inputs"] + s["outputs"])
        # integer-only ops: no MEAN (TFLite requantizes it in floating point)
        assert {op.op for op in g.ops} <= {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED",
                                           "CONCATENATION", "RESHAPE"}
    assert [o["role"] for o in m["stages"][0]["outputs"]] == ["features", "logits"]
    assert [o["role"] for o in m["stages"][1]["outputs"]] == ["logits"]
    assert m["cost"]["macs_to_exit"][-1] == sum(s["macs"] for s in m["stages"])
    assert m["cost"]["macs_no_exit"] < m["cost"]["macs_all_stages"]


def test_cut_tensor_is_quantized_identically_on_both_sides(har_model):
    m = mf.read(har_model[2])
    out, inp = m["stages"][0]["outputs"][0], m["stages"][1]["inputs"][0]
    assert (out["scale"], out["zero_point"], out["shape"]) == (inp["scale"], inp["zero_point"], inp["shape"])


def test_stages_in_sequence_equal_the_unsplit_model(har_model, har):
    """TFLite Micro, bit for bit: stage 0 then stage 1 == the one-piece int8 model."""
    _, _, export_dir = har_model
    m = mf.read(export_dir)
    x = quantize_input(m, har.test.subset(200).x)
    unsplit_bytes = (export_dir / m["unsplit"]["file"]).read_bytes()
    unsplit_graph = Graph(unsplit_bytes)
    from tinyexit.tflite_graph import signature_outputs

    order = [unsplit_graph.outputs.index(t) for t in signature_outputs(unsplit_graph)]  # features, exit, final
    unsplit = StageInterpreter(unsplit_bytes)
    s0, s1 = (StageInterpreter((export_dir / s["file"]).read_bytes()) for s in m["stages"])
    for i in range(len(x)):
        whole = unsplit(x[i:i + 1])
        features, exit_logits = s0(x[i:i + 1])
        (final,) = s1(features)
        for got, want in zip([features, exit_logits, final], [whole[j] for j in order]):
            assert np.array_equal(got, want)


def test_int8_logits_follow_the_float_model(har_model, har):
    """Guards the output mapping: dequantized int8 logits agree with Keras on the predicted class."""
    from tinyexit.reference import all_exit_logits
    from tinyexit.train import predict_logits

    model, _, export_dir = har_model
    m = mf.read(export_dir)
    split = har.test.subset(300)
    q = all_exit_logits(m, quantize_input(m, split.x))
    f = predict_logits(model, split.x)
    for qi, fi in zip(q, f):
        assert (qi.argmax(1) == fi.argmax(1)).mean() > 0.9


def test_manifest_hash_mismatch_is_refused(har_model, tmp_path):
    import shutil

    copy = tmp_path / "export"
    shutil.copytree(har_model[2], copy)
    data = bytearray((copy / "stage_1.tflite").read_bytes())
    data[-20] ^= 0xFF
    (copy / "stage_1.tflite").write_bytes(bytes(data))
    with pytest.raises(TinyexitError, match="stage_1.tflite does not match its sha256"):
        mf.read(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TinyexitError, match="version 99 is not supported"):
        mf.read(copy)


def test_corrupt_tflite_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(TinyexitError, match="not a TFLite flatbuffer"):
        Graph.load(bad)
    bad.write_bytes(b"\x10\x00\x00\x00TFL3" + b"\xff" * 40)
    with pytest.raises(TinyexitError, match="corrupt TFLite flatbuffer|no subgraph"):
        Graph.load(bad)
