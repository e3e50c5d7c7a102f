import numpy as np

from tinyexit import manifest as mf
from tinyexit import pipeline
from tinyexit.calibrate import apply
from tinyexit.reference import all_exit_logits, decide, quantize_input, staged_inference


def test_staged_run_equals_policy_on_all_exits(har_model, har, tmp_path):
    """Stopping at the first confident exit (as firmware does) == running all stages then deciding."""
    import shutil

    export_dir = tmp_path / "export"
    shutil.copytree(har_model[2], export_dir)
    m = mf.read(export_dir)
    apply(m, 26000)
    mf.save(m)
    m = mf.read(export_dir)
    x = quantize_input(m, har.test.subset(300).x)
    staged = staged_inference(m, x)
    decided = decide(m, all_exit_logits(m, x))
    assert np.array_equal(staged.exit, decided.exit) and np.array_equal(staged.pred, decided.pred)
    assert np.array_equal(staged.macs, decided.macs)
    assert 0 < (staged.exit == 0).mean() < 1  # both paths are exercised
    assert set(staged.macs.tolist()) == set(m["cost"]["macs_to_exit"])


def test_tflite_and_tflite_micro_agreement_is_measured(har_model, har):
    agreement = pipeline.interpreter_agreement(har_model[2], har.test.subset(100))
    assert agreement["n"] == 100
    # reference kernels should match TFLite Micro nearly always; optimized kernels round differently
    assert all(a >= 0.9 for a in agreement["litert-ref_vs_tflm"])
    assert all(0.0 <= a <= 1.0 for a in agreement["litert_vs_tflm"])
