import numpy as np

from tinyexit import models
from tinyexit.data import Dataset
from tinyexit.train import predict_logits, train


def _small(har) -> Dataset:
    return Dataset(har.task, har.classes, har.train.subset(600), har.val.subset(200), har.test.subset(200),
                   har.preprocessing)


def test_a_seed_repeats_a_run_exactly(har):
    data = _small(har)
    spec = models.default_spec("har", har.classes, (128, 1, 9), har.preprocessing, [1])
    a = train(spec, data, epochs=1, seed=3, verbose=0)
    b = train(spec, data, epochs=1, seed=3, verbose=0)
    c = train(spec, data, epochs=1, seed=4, verbose=0)
    wa, wb, wc = (np.concatenate([w.ravel() for w in m.get_weights()]) for m in (a, b, c))
    assert np.array_equal(wa, wb)
    assert not np.array_equal(wa, wc)


def test_early_view_branch_is_tied_to_the_early_exit_for_the_tie_epochs(har):
    from tinyexit.train import early_view_tie

    spec = models.default_spec("har", har.classes, (128, 1, 9), har.preprocessing, [2])
    model = models.build(spec)
    early, view = model.get_layer("exit0_dw").kernel, model.get_layer("eva_dw").kernel
    assert view.shape[2] == 4 * early.shape[2]  # 64 final channels, 16 exit channels: tiled 4x
    tie = early_view_tie(model, spec, tie_epochs=1)
    tie.on_epoch_begin(0)
    tie.on_train_batch_begin(0)
    assert np.array_equal(view.numpy(), np.tile(early.numpy(), (1, 1, 4, 1)))
    tie.on_epoch_begin(1)  # past the tie: the branch trains on its own
    view.assign(view.numpy() + 1.0)
    tie.on_train_batch_begin(0)
    assert np.array_equal(view.numpy(), np.tile(early.numpy(), (1, 1, 4, 1)) + 1.0)


def test_exits_and_heads_are_where_the_spec_says(har):
    spec = models.default_spec("har", har.classes, (128, 1, 9), har.preprocessing, [1, 3])
    model = models.build(spec)
    assert model.output_names == ["exit0", "exit1", "final"]
    assert model.count_params() <= 30_000
    logits = predict_logits(model, har.test.x[:4])
    assert [l.shape for l in logits] == [(4, 6)] * 3
