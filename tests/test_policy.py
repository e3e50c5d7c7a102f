import numpy as np
import pytest

from tinyexit import policy


@pytest.mark.parametrize("scale", [0.02, 0.0805, 0.14, 0.4, 1.5])
def test_integer_confidence_matches_the_float_softmax(scale):
    rng = np.random.default_rng(int(scale * 1000))
    logits = rng.integers(-128, 128, (5000, 12)).astype(np.int8)
    cls, conf = policy.confidence_q15(logits, policy.exp_lut(scale))
    exact = policy.float_confidence(logits, scale, zero_point=-3)
    assert np.array_equal(cls, logits.astype(int).argmax(axis=1))
    assert np.abs(conf / policy.Q15 - exact).max() < 12 * 2.0 ** -15


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.77, 0.9, 0.99])
def test_exit_decision_agrees_with_its_float_definition_where_unambiguous(threshold):
    rng = np.random.default_rng(7)
    scale = 0.11
    logits = rng.integers(-128, 128, (20000, 6)).astype(np.int8)
    exits = policy.should_exit(logits, policy.exp_lut(scale), policy.threshold_q15(threshold))
    p = policy.float_confidence(logits, scale, 0)
    clear = np.abs(p - threshold) > 1e-3  # outside the LUT's rounding band the definition is unambiguous
    assert clear.mean() > 0.9
    assert np.array_equal(exits[clear], (p >= threshold)[clear])


def test_threshold_edges():
    assert policy.threshold_q15(0.0) == 0
    assert policy.threshold_q15(1.0) == policy.Q15
    assert policy.threshold_q15(1.5) == policy.NEVER
    lut = policy.exp_lut(0.1)
    assert lut[0] == policy.Q15 and lut.dtype == np.uint16
    one_hot = np.array([[127, -128, -128]], np.int8)
    assert policy.confidence_q15(one_hot, lut)[1][0] <= policy.Q15
    assert not policy.should_exit(one_hot, lut, policy.NEVER)[0]


def test_ties_pick_the_lowest_class():
    cls, conf = policy.confidence_q15(np.array([[5, 9, 9, 1]], np.int8), policy.exp_lut(0.1))
    assert cls[0] == 1 and conf[0] < policy.Q15 // 2 + 1
