"""normlib.lab.train: the seeded training loop, evaluation without side effects, probes."""

import math

import pytest
import torch
from torch import nn

import normlib
from normlib.lab import data, models, train


@pytest.fixture(scope="module")
def digits():
    return data.digits(device="cpu")


def _net(norm="bn"):
    normlib.seed(0)
    return models.mlp(64, 10, hidden=(32, 32), norm=norm)


def test_fit_learns_and_records(digits):
    hist = train.fit(_net(), digits, steps=60, batch_size=32, lr=0.2, eval_every=20, progress=False)
    assert len(hist.train_loss) == 60 and hist.steps == [0, 20, 40, 60]
    assert len(hist.test_loss) == len(hist.test_accuracy) == 4
    assert hist.test_accuracy[0] < 0.3 < 0.8 < hist.final_accuracy  # chance (10 %) -> learned
    assert sum(hist.train_loss[-10:]) < sum(hist.train_loss[:10])
    assert not hist.diverged and hist.seconds > 0 and "final test accuracy" in hist.summary()
    assert hist.steps_to(0.8) in (20, 40, 60) and hist.steps_to(1.01) is None
    assert hist.config["batch_size"] == 32 and hist.config["lr"] == 0.2


def test_epochs_and_epoch_loss(digits):
    hist = train.fit(_net(), digits, epochs=2, batch_size=100, progress=False)
    per_epoch = len(digits.x_train) // 100
    assert len(hist.train_loss) == 2 * per_epoch and hist.steps == [0, per_epoch, 2 * per_epoch]
    assert len(hist.epoch_loss) == 2
    assert hist.epoch_loss[0] == pytest.approx(sum(hist.train_loss[:per_epoch]) / per_epoch)


def test_fit_with_a_sampler(digits):
    calls = []

    def sampler(x, y, batch_size, generator=None):
        calls.append(batch_size)
        return data.non_iid_batches(x, y, batch_size, generator=generator)

    hist = train.fit(_net(), digits, steps=50, batch_size=32, sampler=sampler, progress=False)
    assert len(hist.train_loss) == 50 and calls == [32, 32]  # an epoch has 40 batches here
    assert len(hist.epoch_loss) == 1
    per_epoch = len(list(data.non_iid_batches(digits.x_train, digits.y_train, 32)))
    assert hist.epoch_loss[0] == pytest.approx(sum(hist.train_loss[:per_epoch]) / per_epoch)
    same = train.fit(_net(), digits, steps=50, batch_size=32, sampler=sampler, progress=False)
    assert same.train_loss == hist.train_loss
    iid = train.fit(_net(), digits, steps=50, batch_size=32, progress=False)
    assert iid.train_loss != hist.train_loss
    with pytest.raises(ValueError, match="no batch"):
        train.fit(_net(), digits, steps=5, batch_size=32, sampler=lambda *a, **k: iter(()), progress=False)


def test_seeded_runs_are_identical_and_seeds_differ(digits):
    kwargs = dict(steps=30, batch_size=16, lr=0.1, eval_every=10, progress=False)
    a = train.run(lambda: models.mlp(64, 10, hidden=(16,), norm="bn"), digits, seed=5, **kwargs)
    b = train.run(lambda: models.mlp(64, 10, hidden=(16,), norm="bn"), digits, seed=5, **kwargs)
    c = train.run(lambda: models.mlp(64, 10, hidden=(16,), norm="bn"), digits, seed=6, **kwargs)
    assert a.train_loss == b.train_loss and a.test_accuracy == b.test_accuracy
    assert a.train_loss != c.train_loss


def test_divergence_is_recorded_not_raised(digits):
    hist = train.fit(_net("none"), digits, steps=200, batch_size=32, lr=1e6, progress=False)
    assert hist.diverged and hist.diverged_at is not None and hist.diverged_at < 200
    assert len(hist.train_loss) == hist.diverged_at
    assert all(math.isfinite(v) for v in hist.train_loss)
    assert "diverged at step" in hist.summary()


def test_probe_and_train_accuracy(digits):
    calls = []

    def probe(model):
        calls.append(model.training)  # probes see the model as it trains
        return {"weight_norm": float(model.linear1.weight.norm())}

    hist = train.fit(
        _net(), digits, steps=20, batch_size=32, eval_every=10, eval_train=True, probe=probe, progress=False
    )
    assert calls == [True, True, True]
    assert len(hist.probes["weight_norm"]) == 3 and hist.probes["weight_norm"][0] != hist.probes["weight_norm"][-1]
    assert len(hist.train_accuracy) == 3


def test_evaluate_restores_every_modules_mode(digits):
    net = _net()
    net.train()
    net.norm1.eval()  # a BN layer deliberately frozen inside a training model
    before = net.norm1.running_mean.clone()
    loss, accuracy = train.evaluate(net, digits.x_test, digits.y_test)
    assert 0 <= accuracy <= 1 and loss > 0
    assert net.training and not net.norm1.training and net.norm2.training
    assert torch.equal(net.norm1.running_mean, before)
    # mode="train" uses batch statistics (and moves the running ones): the "forgot eval()" bug.
    running = net.norm2.running_mean.clone()
    train.evaluate(net, digits.x_test, digits.y_test, mode="train", batch_size=50)
    assert not torch.equal(net.norm2.running_mean, running)
    assert not net.norm1.training  # still restored
    chunked = train.evaluate(net, digits.x_test, digits.y_test, batch_size=7)
    whole = train.evaluate(net, digits.x_test, digits.y_test)
    assert chunked[1] == whole[1] and chunked[0] == pytest.approx(whole[0], rel=1e-5)


def test_fit_keeps_a_frozen_layer_frozen_only_if_asked(digits):
    """fit() calls model.train(): an earlier bn.eval() is undone (chapter 5's pitfall)."""
    net = _net()
    net.norm1.eval()
    train.fit(net, digits, steps=2, batch_size=32, progress=False)
    assert net.norm1.training


def test_compare_same_start_and_order(digits):
    initial = {}

    def builder(norm):
        def build():
            net = models.mlp(64, 10, hidden=(16,), norm=norm)
            initial.setdefault(norm, []).append(net.linear1.weight.detach().clone())
            return net

        return build

    runs = train.compare(
        {"bn": builder("bn"), "none": builder("none")}, digits, seeds=(0, 1), steps=5, batch_size=16, progress=False
    )
    assert list(runs) == ["bn", "none"] and all(len(v) == 2 for v in runs.values())
    assert [h.config["seed"] for h in runs["bn"]] == [0, 1]
    # The same seed gives both methods the same initial weights; another seed does not.
    assert torch.equal(initial["bn"][0], initial["none"][0])
    assert not torch.equal(initial["bn"][0], initial["bn"][1])
    assert runs["bn"][0].train_loss != runs["bn"][1].train_loss


def test_fit_validates_its_arguments(digits):
    net = _net()
    with pytest.raises(ValueError, match="exactly one of steps= and epochs="):
        train.fit(net, digits, progress=False)
    with pytest.raises(ValueError, match="exactly one of"):
        train.fit(net, digits, steps=1, epochs=1, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train.fit(net, digits, steps=1, batch_size=5000, progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        train.fit(net, digits, steps=1, optimizer="lbfgs", progress=False)


def test_adam_and_custom_optimizer(digits):
    a = train.fit(_net(), digits, steps=20, batch_size=32, optimizer="adam", lr=1e-3, progress=False)
    b = train.fit(
        _net(),
        digits,
        steps=20,
        batch_size=32,
        progress=False,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
    )
    assert a.train_loss == b.train_loss


def test_capture_and_activation_stats(digits):
    net = _net()
    x = digits.x_test[:50]
    outputs = train.capture(net, x, ["linear1", "act1"])
    torch.testing.assert_close(outputs["linear1"], net.linear1(x))
    inputs = train.capture(net, x, ["act1"], where="input")
    assert torch.all(outputs["act1"] == torch.relu(inputs["act1"]))
    stats = train.activation_stats(net, x)
    assert list(stats) == ["act1", "act2"]
    assert stats["act1"]["mean"] == pytest.approx(float(outputs["act1"].mean()))
    assert stats["act1"]["std"] == pytest.approx(float(outputs["act1"].std(correction=0)))
    with pytest.raises(KeyError, match="no module named"):
        train.capture(net, x, ["conv9"])
    with pytest.raises(ValueError, match="no activation modules"):
        train.activation_stats(nn.Sequential(nn.Linear(64, 10)), x)


def test_progress_switch(monkeypatch):
    monkeypatch.setenv("NORMLIB_PROGRESS", "0")
    assert not train.progress_enabled() and train.progress_enabled(True)
    monkeypatch.setenv("NORMLIB_PROGRESS", "1")
    assert train.progress_enabled() and not train.progress_enabled(False)
    monkeypatch.delenv("NORMLIB_PROGRESS")
    assert train.progress_enabled()


def test_fit_moves_the_model_to_the_data_device(device, digits):
    ds = digits.to(device)
    net = _net()
    hist = train.fit(net, ds, steps=3, batch_size=32, progress=False)
    assert next(net.parameters()).device.type == device.type and len(hist.train_loss) == 3


def test_evaluate_counts_every_label_of_a_sequence():
    """Per-position targets (N, T) with logits (N, classes, T): accuracy over N * T labels."""

    class Echo(nn.Module):
        def forward(self, x):  # one-hot logits of the input ids: predicts y == x
            return nn.functional.one_hot(x, 4).transpose(1, 2).float() * 10

    x = torch.tensor([[0, 1, 2], [3, 3, 1]])
    y = torch.tensor([[0, 1, 0], [3, 2, 1]])  # 4 of 6 labels equal x
    loss, accuracy = train.evaluate(Echo(), x, y)
    assert accuracy == pytest.approx(4 / 6)
    assert train.evaluate(Echo(), x, y, batch_size=1)[1] == pytest.approx(4 / 6)
    assert loss == pytest.approx(float(nn.functional.cross_entropy(Echo()(x), y)))


def test_fit_trains_a_character_model():
    ds = data.characters(seq_len=12, num_train=256, num_test=32, device="cpu")
    normlib.seed(0)
    model = models.char_lstm(ds.num_classes, 16)
    hist = train.fit(model, ds, steps=40, batch_size=32, lr=1e-2, optimizer="adam", eval_every=20, progress=False)
    assert hist.steps == [0, 20, 40]
    assert hist.test_loss[-1] < hist.test_loss[0] - 0.5  # from ~log(vocab) towards the text's statistics
    assert 0.0 <= hist.test_accuracy[0] < hist.final_accuracy <= 1.0
