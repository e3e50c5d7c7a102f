import numpy as np
import pytest

from tinyexit import policy


@pytest.mark.parametrize("scale", [0.02, 0.0805, 0.14, 0.4, 1.5])
def test_integer_confidence_matches_the_float_softmax(scale):
    rng = np.random.default_rng(int(scale * 1000))
    logits = rng.integers(-128, 128, (5000, 12)).astype(np.int8)
    cls, conf = policy.confidence_q15(logits, policy.exp_lut(scale))
    exact = policy.float_score("max_prob", logits.astype(int) - 3, scale)  # a zero point cancels
    assert np.array_equal(cls, logits.astype(int).argmax(axis=1))
    assert np.abs(conf / policy.Q15 - exact).max() < 12 * 2.0 ** -15


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.77, 0.9, 0.99])
def test_exit_decision_agrees_with_its_float_definition_where_unambiguous(threshold):
    rng = np.random.default_rng(7)
    scale = 0.11
    logits = rng.integers(-128, 128, (20000, 6)).astype(np.int8)
    exits = policy.should_exit(logits, policy.exp_lut(scale), policy.threshold_q15(threshold))
    p = policy.float_score("max_prob", logits, scale)
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


@pytest.mark.parametrize("kind", ["margin", "entropy"])
@pytest.mark.parametrize("scale, classes", [(0.02, 12), (0.14, 6), (0.4, 2), (1.5, 12)])
def test_integer_scores_match_their_float_definitions(kind, scale, classes):
    # margin: the LUT's rounding; entropy: also log2 from 8 mantissa bits (< 0.0045 nats), normalised by ln C
    tolerance = 12 * 2.0 ** -15 if kind == "margin" else 0.006 / np.log(classes)
    rng = np.random.default_rng(classes)
    logits = rng.integers(-128, 128, (4000, classes)).astype(np.int8)
    cls, score = policy.scores_q15(kind, logits, policy.exp_lut(scale))
    assert np.array_equal(cls, logits.astype(int).argmax(axis=1))
    assert score.min() >= 0 and score.max() <= policy.Q15
    assert np.abs(score / policy.Q15 - policy.float_score(kind, logits, scale)).max() < tolerance


def test_score_edges():
    lut = policy.exp_lut(0.1)
    tie = np.array([[9, 9, 1]], np.int8)
    assert policy.scores_q15("margin", tie, lut)[1][0] == 0  # a tie has no margin
    sure = np.array([[127, -128, -128]], np.int8)
    assert policy.scores_q15("entropy", sure, lut)[1][0] > 0.99 * policy.Q15
    flat = np.full((1, 5), 7, np.int8)
    assert policy.scores_q15("entropy", flat, lut)[1][0] < 0.01 * policy.Q15  # uniform: maximum entropy
    assert policy.scores_q15("margin", np.array([[3]], np.int8), lut)[1][0] > 0.99 * policy.Q15
    with pytest.raises(ValueError):
        policy.scores_q15("vote", sure, lut)
