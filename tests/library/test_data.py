"""course_lib.data: the digits split, the course's sentence pairs, the course LM's texts, and
the corpus builder's markup cleanup."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from course_lib import data
from course_lib.data import corpus_text, load_digits, sentence_pairs
from course_lib.evaluate import accuracy

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------
def test_digits_shapes_dtypes_and_range():
    X_train, y_train, X_test, y_test = load_digits()
    assert X_train.shape == (1347, 64) and X_test.shape == (450, 64)
    assert y_train.shape == (1347,) and y_test.shape == (450,)
    assert X_train.dtype == X_test.dtype == torch.float32
    assert y_train.dtype == y_test.dtype == torch.int64
    assert float(X_train.min()) == 0.0 and float(X_train.max()) == 1.0
    assert set(y_train.tolist()) == set(y_test.tolist()) == set(range(10))


def test_digits_split_is_deterministic_stratified_and_a_partition():
    a = load_digits(seed=3)
    b = load_digits(seed=3)
    c = load_digits(seed=4)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    X_train, y_train, X_test, y_test = a
    # Every image is in exactly one split: the multiset of rows is the full data set.
    X_all, y_all = data._digits_arrays()
    both = torch.cat([torch.cat([X_train, y_train[:, None].float()], 1), torch.cat([X_test, y_test[:, None].float()], 1)])
    full = torch.cat([X_all, y_all[:, None].float()], 1)
    assert torch.equal(torch.unique(both, dim=0, return_counts=True)[1].sort().values,
                       torch.unique(full, dim=0, return_counts=True)[1].sort().values)
    assert both.shape == full.shape
    # Stratified: each class is ~25% in test.
    for cls in range(10):
        n_test, n_all = int((y_test == cls).sum()), int((y_all == cls).sum())
        assert abs(n_test - 0.25 * n_all) <= 1


def test_digits_test_fraction_and_errors():
    X_train, _, X_test, _ = load_digits(test_fraction=0.5)
    assert abs(X_test.shape[0] - X_train.shape[0]) <= 10
    for bad in (0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="test_fraction"):
            load_digits(test_fraction=bad)
    with pytest.raises(TypeError, match="test_fraction"):
        load_digits(test_fraction="0.2")
    with pytest.raises(TypeError, match="seed"):
        load_digits(seed=0.5)


def test_digits_are_learnable_in_a_second():
    X_train, y_train, X_test, y_test = load_digits()
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X_train), y_train).backward()
        opt.step()
    assert accuracy(model, X_test, y_test) > 0.93


# --------------------------------------------------------------------------------------
# sentence pairs
# --------------------------------------------------------------------------------------
def test_sentence_pairs_content():
    pairs = sentence_pairs()
    assert 60 <= len(pairs) <= 80
    for a, b, score in pairs:
        assert isinstance(a, str) and isinstance(b, str) and a and b and a != b
        assert "\t" not in a + b
        assert isinstance(score, float) and 0.0 <= score <= 5.0
    assert len({(a, b) for a, b, _ in pairs}) == len(pairs)
    scores = torch.tensor([s for _, _, s in pairs])
    # The set spans the scale: unrelated, same topic, partly equivalent, paraphrase.
    for lo, hi in ((0, 0.5), (0.5, 2), (2, 3.5), (3.5, 4.5), (4.5, 5.01)):
        assert int(((scores >= lo) & (scores < hi)).sum()) >= 8, (lo, hi)


def test_sentence_pairs_returns_a_new_list():
    pairs = sentence_pairs()
    pairs.clear()
    assert len(sentence_pairs()) > 0


# --------------------------------------------------------------------------------------
# course LM texts
# --------------------------------------------------------------------------------------
def test_corpus_texts_are_shipped_held_out_and_small():
    calib, ev = corpus_text("calib"), corpus_text("eval")
    for text in (calib, ev):
        assert 100_000 < len(text.encode("utf-8")) < 400_000
        assert "Python" in text
        assert ".. index::" not in text and ":func:`" not in text  # markup was cleaned
    # Held out from each other: no long line appears in both.
    calib_lines = {line for line in calib.splitlines() if len(line) > 60}
    eval_lines = {line for line in ev.splitlines() if len(line) > 60}
    shared = calib_lines & eval_lines
    assert len(shared) < 0.01 * len(eval_lines), sorted(shared)[:5]
    folder = REPO / "course_lib" / "assets" / "course_lm_corpus"
    licence = (folder / "LICENSE-PSF.txt").read_text(encoding="utf-8")
    assert "PSF LICENSE AGREEMENT FOR PYTHON" in licence
    assert "Copyright © 2001-2023 Python Software Foundation" in licence
    assert "python3.11-doc" in (folder / "MANIFEST.txt").read_text()


def test_corpus_text_errors():
    for bad in ("train", "test", "EVAL", ""):
        with pytest.raises(ValueError, match="split"):
            corpus_text(bad)
    with pytest.raises(TypeError, match="split"):
        corpus_text(0)


def test_assets_stay_small():
    total = sum(p.stat().st_size for p in (REPO / "course_lib" / "assets").rglob("*") if p.is_file())
    assert total < 15 * 2**20, total


# --------------------------------------------------------------------------------------
# the corpus builder's reStructuredText cleanup
# --------------------------------------------------------------------------------------
def _build_corpus_module():
    spec = importlib.util.spec_from_file_location("build_corpus", REPO / "scripts" / "build_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clean_rst_rewrites_markup_to_text():
    bc = _build_corpus_module()
    rst = (
        ":mod:`bisect` --- Array bisection\n"
        "=================================\n"
        "\n"
        ".. module:: bisect\n"
        "   :synopsis: Array bisection algorithms.\n"
        "\n"
        ".. index:: single: search\n"
        "\n"
        ".. _bisect-label:\n"
        "\n"
        "Use :func:`~bisect.insort` or see `the docs <https://example.org>`_ and ``len(a)``.\n"
        "For example::\n"
        "\n"
        "   >>> insort(a, 3)\n"
        "\n"
        ".. function:: bisect_left(a, x)\n"
        "              bisect(a, x)\n"
        "\n"
        "   Locate the insertion point.\n"
        "\n"
        "   .. versionadded:: 3.10\n"
        "      The *key* parameter.\n"
    )
    out = bc.clean_rst(rst)
    expected = (
        "bisect --- Array bisection\n"
        "\n"
        "Use insort or see the docs and len(a).\n"
        "For example:\n"
        "\n"
        "   >>> insort(a, 3)\n"
        "\n"
        "bisect_left(a, x)\n"
        "bisect(a, x)\n"
        "\n"
        "   Locate the insertion point.\n"
        "\n"
        "   New in version 3.10.\n"
        "      The *key* parameter.\n"
    )
    assert out == expected


def test_split_is_by_path_hash_and_disjoint():
    bc = _build_corpus_module()
    docs = {f"lib/m{i}.rst.txt": "x" * (1000 + i) for i in range(40)}
    docs["big.rst.txt"] = "y" * 100_000
    splits = bc.split_documents(docs, split_bytes=5000, max_heldout_file_bytes=60_000)
    names = [p for s in splits.values() for p in s]
    assert sorted(names) == sorted(docs)
    assert "big.rst.txt" in splits["train"]
    for name in ("eval", "calib", "valid"):
        assert 5000 <= sum(len(docs[p]) for p in splits[name]) < 5000 + 1100
    assert splits == bc.split_documents(dict(reversed(list(docs.items()))), 5000, 60_000)


# --------------------------------------------------------------------------------------
# synthetic data for the widgets
# --------------------------------------------------------------------------------------
def _fingerprint(t: torch.Tensor) -> tuple[float, float]:
    return round(float(t.double().sum()), 4), round(float(t.double().abs().max()), 4)


#: (generator call, fingerprints of its tensors): what the widgets show by default. A changed draw order
#: or formula changes the widgets' numbers (and notebook 02's printed ones): update these on purpose only.
WIDGET_DATA = [
    (lambda: [data.gaussian_with_outliers()], [(-212.3551, 13.642)]),
    (lambda: list(data.outlier_column_layers().values()), [(-6.2056, 0.2172), (-1.121, 5.0879)]),
    (lambda: list(data.outlier_feature_activations()), [(-77.2979, 37.4469), (0.5942, 0.2761)]),
    (lambda: list(data.correlated_feature_layer(0.5, 8.0)), [(-5.9526, 0.3625), (1527.264, 55.7349),
                                                              (-653.6906, 47.9582)]),
    (lambda: [data.heavy_tailed_weight()], [(-14.2485, 0.676)]),
    (lambda: list(data.outlier_feature_layer(10.0)), [(-5.9526, 0.3625), (23.1819, 42.1717)]),
    (lambda: [data.heavy_tailed_activation()], [(49765.1484, 112.3202)]),
]


@pytest.mark.parametrize("make, expected", WIDGET_DATA, ids=["gaussian_with_outliers", "outlier_column_layers",
                                                             "outlier_feature_activations", "correlated_feature_layer",
                                                             "heavy_tailed_weight", "outlier_feature_layer",
                                                             "heavy_tailed_activation"])
def test_widget_data_is_the_same_on_every_call_and_machine(make, expected):
    first, second = make(), make()
    assert all(torch.equal(a, b) and a.dtype == torch.float32 for a, b in zip(first, second))
    assert [_fingerprint(t) for t in first] == expected


@pytest.mark.parametrize("distribution", data.WEIGHT_DISTRIBUTIONS)
def test_weight_sample_has_unit_std_and_a_seed(distribution):
    x = data.weight_sample(distribution, 100_000)
    assert x.shape == (100_000,) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 1) < 0.05
    assert torch.equal(x, data.weight_sample(distribution, 100_000, seed=0))
    assert not torch.equal(x, data.weight_sample(distribution, 100_000, seed=1))


def test_widget_data_shapes_and_outliers():
    x = data.gaussian_with_outliers(1000, one_in=100, factor=8.0, seed=3)
    plain = data.weight_sample("gaussian", 1000, seed=3)
    assert torch.equal(x[:10], 8.0 * plain[:10]) and torch.equal(x[10:], plain[10:])
    assert torch.equal(data.gaussian_with_outliers(50, one_in=100, factor=2.0)[:1],
                       2.0 * data.weight_sample("gaussian", 50)[:1])  # at least one outlier
    layers = data.outlier_column_layers()
    spiky = layers["synthetic, one outlier column"]
    assert spiky.abs().amax(dim=0).argmax() == 17
    x, w = data.outlier_feature_activations(tokens=32, features=300, out_features=8)
    assert x.shape == (32, 300) and w.shape == (8, 300)
    assert set(x.abs().amax(dim=0).topk(4).indices.tolist()) == {7, 60, 131, 200}
    W, X_cal, X_test = data.correlated_feature_layer(0.9, 5.0, out_features=8, in_features=32, tokens=64)
    assert W.shape == (8, 32) and X_cal.shape == X_test.shape == (64, 32) and not torch.equal(X_cal, X_test)
    W, X = data.outlier_feature_layer(5.0, out_features=8, in_features=32, tokens=512)
    norms = X.norm(dim=0)
    assert W.shape == (8, 32) and X.shape == (512, 32) and norms[::16].min() > 3 * norms[1:16].max()
    assert data.heavy_tailed_weight(4, 6, seed=1).shape == (4, 6)


def test_widget_data_errors():
    with pytest.raises(ValueError, match="distribution"):
        data.weight_sample("cauchy", 10)
    with pytest.raises(TypeError, match="seed"):
        data.heavy_tailed_weight(seed=1.5)
    for df in (0, 2.5, True):
        with pytest.raises(ValueError, match="df"):
            data.heavy_tailed_activation(10, df=df)
