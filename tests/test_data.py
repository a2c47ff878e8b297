"""normlib.lab.data: offline datasets with fixed splits, and reproducible mini-batches."""

import builtins

import pytest
import torch

from normlib.lab import data


@pytest.fixture(scope="module")
def digits():
    return data.digits(device="cpu")


def test_digits_shapes_split_and_scale(digits):
    assert digits.name == "digits" and digits.num_classes == 10
    assert (len(digits.x_train), len(digits.x_test)) == (1347, 450)
    assert digits.input_shape == (64,) and digits.x_train.dtype == torch.float32
    assert digits.y_train.dtype == torch.int64
    assert 0.0 <= float(digits.x_train.min()) and float(digits.x_train.max()) <= 1.0
    # Stratified: every class has its share (about a quarter) in the test split.
    counts_test = torch.bincount(digits.y_test, minlength=10)
    counts_all = counts_test + torch.bincount(digits.y_train, minlength=10)
    assert torch.all((counts_test.float() / counts_all - 0.25).abs() < 0.01)


def test_digits_split_is_a_partition_of_the_raw_data(digits):
    import numpy as np
    from sklearn.datasets import load_digits

    raw = load_digits()
    train, test = data._stratified_split(raw.target, 0.25, seed=0)
    assert len(np.intersect1d(train, test)) == 0
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(raw.target)))
    torch.testing.assert_close(digits.x_train, torch.as_tensor(raw.data[train] / 16.0, dtype=torch.float32))
    assert digits.y_test.tolist() == raw.target[test].tolist()


def test_digits_is_deterministic_and_seed_changes_the_split():
    a, b = data.digits(seed=3, device="cpu"), data.digits(seed=3, device="cpu")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = data.digits(seed=4, device="cpu")
    assert not torch.equal(a.x_train, c.x_train)


def test_digits_image_layout_and_standardize():
    images = data.digits(image=True, device="cpu")
    flat = data.digits(device="cpu")
    assert images.input_shape == (1, 8, 8)
    torch.testing.assert_close(images.x_train.reshape(-1, 64), flat.x_train)
    z = data.digits(standardize=True, device="cpu", dtype=torch.float64)
    # Training statistics: mean 0, variance 1 per pixel (constant pixels stay 0).
    torch.testing.assert_close(z.x_train.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-12, rtol=0)
    std = z.x_train.std(0, correction=0)
    assert torch.all(((std - 1).abs() < 1e-9) | (std == 0))
    assert (std == 0).sum() >= 1  # the corner pixels of the digits are always 0
    # The test split is transformed with the training statistics, so it is not exactly standardized.
    assert float(z.x_test.mean(0).abs().max()) > 1e-3


def test_dataset_to_and_repr(digits):
    moved = digits.to(dtype=torch.float64)
    assert moved.x_train.dtype == torch.float64 and moved.y_train.dtype == torch.int64
    assert digits.x_train.dtype == torch.float32  # the original is untouched
    assert "1347 train / 450 test" in repr(digits)


def test_dataset_rejects_mismatched_or_float_labels():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="4 samples but y_train has 3"):
        data.Dataset("bad", x, torch.zeros(3, dtype=torch.int64), x, torch.zeros(4, dtype=torch.int64), 2)
    with pytest.raises(TypeError, match="int64 class labels"):
        data.Dataset("bad", x, torch.zeros(4), x, torch.zeros(4, dtype=torch.int64), 2)


def test_mnist1d_generated_offline():
    ds = data.mnist1d(device="cpu")
    assert (len(ds.x_train), len(ds.x_test)) == (4000, 1000) and ds.input_shape == (40,)
    assert set(ds.y_train.unique().tolist()) == set(range(10))
    channel = data.mnist1d(channel=True, device="cpu")
    assert channel.input_shape == (1, 40)
    torch.testing.assert_close(channel.x_train[:, 0], ds.x_train)


def test_missing_data_package_names_it(monkeypatch):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    import sys

    for module in [m for m in sys.modules if m.startswith("sklearn")]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        data.digits(device="cpu")


def test_shapes_labels_are_the_shapes_and_photometry_varies():
    ds = data.shapes(num_train=200, num_test=40, size=16, noise=0.0, seed=1, device="cpu", dtype=torch.float64)
    assert ds.input_shape == (1, 16, 16) and ds.num_classes == 4
    counts = torch.bincount(ds.y_train, minlength=4)
    assert counts.min() >= 40  # balanced classes
    # Without noise each image has exactly two grey levels: background = brightness,
    # shape = brightness + contrast, so (image - min) / (max - min) is the shape's mask.
    x = ds.x_train[:, 0]
    low, high = x.amin(dim=(1, 2)), x.amax(dim=(1, 2))
    masks = (x - low[:, None, None]) / (high - low)[:, None, None]
    assert torch.all((masks - masks.round()).abs() < 1e-9)
    gains = high - low
    assert (
        float(gains.min()) >= 0.5 - 1e-9 and float(gains.max()) <= 2.0 + 1e-9 and float(gains.max() / gains.min()) > 2
    )
    assert float(low.min()) < -0.5 and float(low.max()) > 0.5
    # Area distinguishes a cross from a filled square of the same size on average.
    area = masks.sum(dim=(1, 2))
    square, cross = data.SHAPE_CLASSES.index("square"), data.SHAPE_CLASSES.index("cross")
    assert area[ds.y_train == square].mean() > area[ds.y_train == cross].mean()


def test_shapes_deterministic_and_validated():
    a = data.shapes(num_train=10, num_test=5, seed=2, device="cpu")
    b = data.shapes(num_train=10, num_test=5, seed=2, device="cpu")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    with pytest.raises(ValueError, match="contrast"):
        data.shapes(contrast=(0.0, 1.0))
    with pytest.raises(ValueError, match="size"):
        data.shapes(size=4)


def test_batches_cover_each_sample_once_in_a_seeded_order():
    x = torch.arange(10.0)[:, None]
    y = torch.arange(10)
    epoch = list(data.batches(x, y, 3, generator=torch.Generator().manual_seed(0)))
    assert [len(b[0]) for b in epoch] == [3, 3, 3]  # drop_last
    seen = torch.cat([b[1] for b in epoch])
    assert len(set(seen.tolist())) == 9
    again = list(data.batches(x, y, 3, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(epoch, again))
    other = torch.cat([b[1] for b in data.batches(x, y, 3, generator=torch.Generator().manual_seed(1))])
    assert not torch.equal(seen, other)
    keep_all = list(data.batches(x, y, 3, shuffle=False, drop_last=False))
    assert [b[1].tolist() for b in keep_all] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    for bx, by in keep_all:
        assert torch.equal(bx[:, 0].long(), by)  # x and y stay paired


def test_batches_rejects_bad_sizes():
    x, y = torch.zeros(4, 1), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="at least 1"):
        next(data.batches(x, y, 0))
    with pytest.raises(ValueError, match="larger than the 4 samples"):
        next(data.batches(x, y, 5))
    with pytest.raises(ValueError, match="3 samples but y has 4"):
        next(data.batches(x[:3], y, 2))


def test_non_iid_batches_hold_few_classes_and_each_sample_once():
    y = torch.arange(10).repeat_interleave(20)  # 10 classes of 20 samples
    x = torch.arange(200.0)[:, None]
    epoch = list(data.non_iid_batches(x, y, 8, generator=torch.Generator().manual_seed(0)))
    # chunks of 4: 5 per class, 50 in all, 25 batches (the classes run out together)
    assert len(epoch) == 25
    for bx, by in epoch:
        assert len(by) == 8 and len(set(by.tolist())) == 2
        assert sorted(torch.bincount(by).tolist())[-2:] == [4, 4]  # 4 of each class
        assert torch.equal(y[bx[:, 0].long()], by)  # x and y stay paired
    seen = torch.cat([b[0][:, 0] for b in epoch]).long()
    assert len(set(seen.tolist())) == 200
    again = list(data.non_iid_batches(x, y, 8, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(epoch, again))
    other = list(data.non_iid_batches(x, y, 8, generator=torch.Generator().manual_seed(1)))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(epoch, other))
    three = list(data.non_iid_batches(x, y, 9, classes_per_batch=3))
    assert all(len(set(by.tolist())) == 3 for _, by in three)


def test_non_iid_batches_validate():
    x, y = torch.zeros(12, 1), torch.tensor([0] * 6 + [1] * 6)
    with pytest.raises(ValueError, match="multiple of classes_per_batch"):
        next(data.non_iid_batches(x, y, 5))
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        next(data.non_iid_batches(x, y, 14))
    with pytest.raises(ValueError, match="11 samples but y has 12"):
        next(data.non_iid_batches(x[:11], y, 4))


# --------------------------------------------------------------------------- text (chapter 6)


def test_characters_windows_are_the_text_shifted_by_one():
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(1000))
    ds = data.characters(text=text, seq_len=9, num_test=None, test_fraction=0.2, device="cpu")
    assert isinstance(ds, data.TextDataset) and ds.name == "text"
    assert ds.x_train.dtype == ds.y_train.dtype == torch.int64
    assert ds.x_train.shape == (800 // 10, 9) and ds.x_test.shape == (200 // 10, 9)
    assert ds.vocabulary == "abcdefghijklmnopqrstuvwxyz" and ds.num_classes == 26
    # consecutive windows of 10 characters: x is the first 9, y the last 9
    assert ds.decode(ds.x_train[0]) == text[:9] and ds.decode(ds.y_train[0]) == text[1:10]
    assert ds.decode(ds.x_train[1]) == text[10:19]
    assert torch.equal(ds.x_train[:, 1:], ds.y_train[:, :-1])
    assert ds.decode(ds.x_test[0]) == text[800:809]  # test windows come from the end of the text
    assert torch.equal(ds.encode("cab"), torch.tensor([2, 0, 1]))
    with pytest.raises(KeyError, match="not in the vocabulary"):
        ds.encode("A")


def test_characters_default_text_ships_with_python_and_is_seeded():
    text = data.python_docs_text()
    assert len(text) > 100_000 and "assert" in text
    a = data.characters(seq_len=16, num_train=50, num_test=20, seed=3, device="cpu")
    b = data.characters(seq_len=16, num_train=50, num_test=20, seed=3, device="cpu")
    c = data.characters(seq_len=16, num_train=50, num_test=20, seed=4, device="cpu")
    assert a.name == "python-docs" and a.x_train.shape == (50, 16) and a.x_test.shape == (20, 16)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert a.decode(a.x_train[0]) in text
    assert "TextDataset('python-docs': 50 train / 20 test windows of 16 characters" in repr(a)
    moved = a.to("cpu")
    assert isinstance(moved, data.TextDataset) and moved.vocabulary == a.vocabulary


def test_characters_validates():
    with pytest.raises(ValueError, match="seq_len"):
        data.characters(seq_len=0, text="abc")
    with pytest.raises(ValueError, match="too short"):
        data.characters(seq_len=50, text="abcdef" * 10)
    with pytest.raises(ValueError, match="only"):
        data.characters(seq_len=4, text="abcdef" * 10, num_test=100)
    with pytest.raises(ValueError, match="vocabulary"):
        data.TextDataset(
            "t",
            torch.zeros(2, 3, dtype=torch.int64),
            torch.zeros(2, 3, dtype=torch.int64),
            torch.zeros(1, 3, dtype=torch.int64),
            torch.zeros(1, 3, dtype=torch.int64),
            5,
            vocabulary="ab",
        )
