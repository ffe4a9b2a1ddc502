"""The course's data, all shipped or bundled, so that every notebook runs offline.

- :func:`load_digits`: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes)
  as train/test tensors, for the QAT, BitNet, distillation and pruning training loops;
- :func:`sentence_pairs`: a small sentence-similarity set written for this course, to score
  MiniLM's embeddings before and after quantization;
- :func:`corpus_text`: the calibration and evaluation texts of the course LM (from the Python
  3.11 documentation, PSF licence; see docs/COURSE_LM.md);
- :func:`hub_text`: the papers' texts (WikiText-2, C4) from the Hugging Face hub, for the one cell
  that reproduces a paper's row where a network is (notebook 07); never used offline;
- synthetic data, drawn from a seed (the same numbers on every machine), that the widgets show
  when no model is loaded: :func:`weight_sample` (named distributions, standard deviation 1),
  :func:`gaussian_with_outliers` (notebooks 02 and 10), :func:`outlier_column_layers` (03),
  :func:`outlier_feature_activations` (06), :func:`correlated_feature_layer` (07),
  :func:`heavy_tailed_weight` (09) and :func:`outlier_feature_layer` (12). Each is written once,
  here; the widget modules only choose among them.
"""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path

import torch

__all__ = [
    "ASSETS_DIR",
    "load_digits",
    "sentence_pairs",
    "corpus_text",
    "CORPUS_SPLITS",
    "hub_text",
    "HUB_TEXTS",
    "WEIGHT_DISTRIBUTIONS",
    "weight_sample",
    "gaussian_with_outliers",
    "outlier_column_layers",
    "outlier_feature_activations",
    "correlated_feature_layer",
    "heavy_tailed_weight",
    "heavy_tailed_activation",
    "outlier_feature_layer",
]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
CORPUS_DIR = ASSETS_DIR / "course_lm_corpus"
CORPUS_SPLITS = ("calib", "eval")


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    X = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0  # pixel values 0..16 -> [0, 1]
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    return X, y


def load_digits(seed: int = 0, test_fraction: float = 0.25):
    """scikit-learn's 8x8 digits as tensors, split into train and test sets.

    The split is stratified (each class keeps its share in both sets) and depends only on
    ``seed``: the same seed gives the same split on every machine.

    Args:
        seed: seed of the split (an int).
        test_fraction: share of the 1797 images in the test set, ``0 < test_fraction < 1``.

    Returns:
        ``(X_train, y_train, X_test, y_test)``: ``X_*`` float32 ``[N, 64]`` with pixels scaled to
        ``[0, 1]`` (row-major 8x8 images), ``y_*`` int64 ``[N]`` with labels 0..9. With the
        defaults, 1347 training and 450 test images.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        raise TypeError(f"test_fraction must be a float, got {type(test_fraction).__name__}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    X, y = _digits_arrays()
    n = X.shape[0]
    gen = torch.Generator().manual_seed(seed)
    test_idx, train_idx = [], []
    # Stratified: shuffle each class and send round(test_fraction * class size) of it to test.
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        k = int(round(float(test_fraction) * idx.numel()))
        test_idx.append(idx[:k])
        train_idx.append(idx[k:])
    test_idx = torch.cat(test_idx)
    train_idx = torch.cat(train_idx)
    if test_idx.numel() == 0 or train_idx.numel() == 0:
        raise ValueError(f"test_fraction={test_fraction} leaves an empty split of the {n} images")
    # Mix the classes within each split (the order a training loop would see).
    test_idx = test_idx[torch.randperm(test_idx.numel(), generator=gen)]
    train_idx = train_idx[torch.randperm(train_idx.numel(), generator=gen)]
    return X[train_idx].clone(), y[train_idx].clone(), X[test_idx].clone(), y[test_idx].clone()


@functools.lru_cache(maxsize=1)
def _read_sentence_pairs() -> tuple[tuple[str, str, float], ...]:
    path = ASSETS_DIR / "sentence_pairs.tsv"
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader)
    if header != ["sentence_a", "sentence_b", "score"]:
        raise RuntimeError(f"{path}: unexpected header {header}")
    for i, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != 3:
            raise RuntimeError(f"{path}: row {i} has {len(row)} columns, expected 3")
        a, b, score = row[0].strip(), row[1].strip(), float(row[2])
        if not 0.0 <= score <= 5.0:
            raise RuntimeError(f"{path}: row {i} score {score} is outside [0, 5]")
        rows.append((a, b, score))
    return tuple(rows)


def sentence_pairs() -> list[tuple[str, str, float]]:
    """The course's sentence-similarity set (64 pairs written for the course).

    Pairs range from unrelated (score 0) through same topic (1), some shared details (2),
    roughly equivalent (3) and equivalent up to a detail (4) to paraphrases (5), in the spirit
    of the STS benchmark's scale. Score a sentence encoder with the Spearman correlation
    between these scores and the cosine similarity of the two sentences' embeddings.

    Returns:
        A new list of ``(sentence_a, sentence_b, score)`` with ``score`` a float in ``[0, 5]``.
    """
    return list(_read_sentence_pairs())


@functools.lru_cache(maxsize=2)
def _read_corpus(split: str) -> str:
    return (CORPUS_DIR / f"{split}.txt").read_text(encoding="utf-8")


def corpus_text(split: str) -> str:
    """The course LM's calibration or evaluation text (about 200 KB each).

    Both are held out from the LM's training text: the files of the Python 3.11 documentation
    are split by a hash of their path (scripts/build_corpus.py), so no document is in two splits.

    Args:
        split: ``"calib"`` (calibration data for GPTQ, AWQ, observers) or ``"eval"`` (the text
            perplexity is measured on).

    Returns:
        The text, a str of about 200,000 characters (about 58,000 course-LM tokens for "eval").
    """
    if not isinstance(split, str):
        raise TypeError(f"split must be a str, one of {CORPUS_SPLITS}, got {type(split).__name__}")
    if split not in CORPUS_SPLITS:
        raise ValueError(f"split must be one of {CORPUS_SPLITS}, got {split!r} (the training text is not shipped; "
                         "scripts/build_corpus.py rebuilds it)")
    return _read_corpus(split)


#: The papers' texts on the Hugging Face hub (dataset repository, file): WikiText-2 (raw) for perplexity
#: and the first shard of C4's English training set, the file the GPTQ paper's code draws its calibration from.
HUB_TEXTS = {
    "wikitext2-test": ("Salesforce/wikitext", "wikitext-2-raw-v1/test-00000-of-00001.parquet"),
    "wikitext2-train": ("Salesforce/wikitext", "wikitext-2-raw-v1/train-00000-of-00001.parquet"),
    "c4-train": ("allenai/c4", "en/c4-train.00000-of-01024.json.gz"),
}


def _read_documents(path: Path, max_documents: int | None) -> list[str]:
    """The ``text`` field of each record of a Parquet or JSON-lines (optionally gzip) file, in order."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"reading {path.name} needs pyarrow (pip install pyarrow; Colab has it)") from None
        texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
        return texts[:max_documents]
    import gzip
    import json

    opener = gzip.open if path.suffix == ".gz" else open
    texts = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if max_documents is not None and len(texts) >= max_documents:
                break
            if line.strip():
                texts.append(json.loads(line)["text"])
    return texts


def hub_text(name: str, *, max_documents: int | None = None, allow_download: bool | None = None,
             path: str | Path | None = None) -> str:
    """A text the papers evaluate or calibrate on, from the Hugging Face hub (or a local copy of its file).

    WikiText-2 is joined as the GPTQ and AWQ papers' code joins it (records separated by a blank
    line, ``"\\n\\n"``), so that a perplexity with disjoint 2048-token windows is their number. C4's
    documents are joined the same way; the GPTQ code instead draws each calibration window from one
    random document longer than the window, so windows drawn from this text can span two documents.

    Args:
        name: a key of :data:`HUB_TEXTS`: ``"wikitext2-test"``, ``"wikitext2-train"`` or ``"c4-train"``.
        max_documents: keep only the first this many records (C4's shard has about 356,000;
            10,000 give some 20 MB of text). None: all of them.
        allow_download: None (default): follow ``HF_HUB_OFFLINE`` (which the course sets to 1, so only
            the local hub cache is read); True: download this file even in offline mode (needs a
            network); False: the local cache only.
        path: a local copy of the file (Parquet, or JSON lines with a ``text`` field, optionally
            gzipped); the hub is then not asked at all.

    Returns:
        The joined text (a str).
    """
    if not isinstance(name, str) or name not in HUB_TEXTS:
        raise ValueError(f"name must be one of {tuple(HUB_TEXTS)}, got {name!r}")
    if max_documents is not None and (isinstance(max_documents, bool) or not isinstance(max_documents, int)
                                      or max_documents < 1):
        raise ValueError(f"max_documents must be None or an int >= 1, got {max_documents!r}")
    if allow_download not in (None, True, False):
        raise TypeError(f"allow_download must be None, True or False, got {allow_download!r}")
    if path is None:
        from huggingface_hub import hf_hub_download

        from .models import _hub_online

        repo, filename = HUB_TEXTS[name]
        try:
            with _hub_online(allow_download):
                path = hf_hub_download(repo, filename, repo_type="dataset",
                                       local_files_only=allow_download is False)
        except Exception as exc:  # offline, not in the cache, or no network
            raise OSError(f"could not get {filename!r} of the dataset {repo!r} from the Hugging Face hub or its local "
                          f"cache ({type(exc).__name__}). With a network pass allow_download=True; or pass path= "
                          "a local copy of the file.") from exc
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r}: no such file")
    texts = _read_documents(path, max_documents)
    if not texts:
        raise ValueError(f"{path.name} holds no text records")
    return "\n\n".join(texts)


# ----------------------------------------------------------------------------------------------
# synthetic data for the widgets
#
# Each function seeds its own torch.Generator, so a widget's numbers (and a notebook that prints
# them) are the same on every machine. The order of the draws is part of the data: changing it
# changes what the widgets show.

#: Distributions of :func:`weight_sample`: Gaussian, Laplace (heavier tails), Student-t with 3
#: degrees of freedom (outliers) and uniform.
WEIGHT_DISTRIBUTIONS = ("gaussian", "laplace", "student_t3", "uniform")


def _generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _student_t(shape: tuple[int, ...], df: int, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    # scale times a normal over the root of a chi-square / df (variance scale**2 * df / (df - 2))
    normal = torch.randn(*shape, generator=gen)
    chi2 = torch.randn(df, *shape, generator=gen).pow(2).sum(0)
    return scale * normal / (chi2 / df).sqrt()


def _linear_weight(out_features: int, in_features: int, gen: torch.Generator) -> torch.Tensor:
    # Gaussian with variance 1 / in_features: outputs of the order of the inputs.
    return torch.randn(out_features, in_features, generator=gen) / math.sqrt(in_features)


def _feature_scales(in_features: int, outlier_scale: float) -> torch.Tensor:
    # Every 16th input feature outlier_scale times larger: the uneven feature scales of real activations.
    scale = torch.ones(in_features)
    scale[::16] = outlier_scale
    return scale


def weight_sample(distribution: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` values of a named distribution with mean 0 and standard deviation 1.

    Args:
        distribution: one of :data:`WEIGHT_DISTRIBUTIONS`.
        n: the number of values.
        seed: seed of the draws.

    Returns:
        float32 ``[n]``.
    """
    gen = _generator(seed)
    if distribution == "gaussian":
        return torch.randn(n, generator=gen)
    if distribution == "laplace":
        # inverse CDF; float64 draws keep log1p away from -1 (a float32 draw of 0 would give -inf)
        u = torch.rand(n, generator=gen, dtype=torch.float64) - 0.5
        return (-torch.sign(u) * torch.log1p(-2 * u.abs()) / 2**0.5).float()
    if distribution == "student_t3":
        return _student_t((n,), 3, gen) / 3**0.5
    if distribution == "uniform":
        return (torch.rand(n, generator=gen) * 2 - 1) * 3**0.5
    raise ValueError(f"distribution must be one of {WEIGHT_DISTRIBUTIONS}, got {distribution!r}")


def gaussian_with_outliers(n: int = 20_000, one_in: int = 200, factor: float = 4.0, seed: int = 0) -> torch.Tensor:
    """A Gaussian sample (standard deviation 1) with a few values ``factor`` times larger.

    Like a layer's weights or activations. The defaults (0.5% of the values 4x larger) are notebook
    02's data; notebook 10's ternary widget takes 0.1% 8x larger (``one_in=1000, factor=8``).

    Args:
        n: the number of values.
        one_in: one value in ``one_in`` is an outlier (at least one).
        factor: the outliers' factor.
        seed: seed of the draws.

    Returns:
        float32 ``[n]``; the outliers are its first ``max(1, n // one_in)`` values.
    """
    x = weight_sample("gaussian", n, seed)
    x[: max(1, n // one_in)] *= factor
    return x


def outlier_column_layers(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two small weights ``[64, 256]`` (standard deviation 0.05), the second with one outlier input column.

    Notebook 03's granularity widget shows them when no model is loaded: column 17 of the second is 40x
    larger, the case where one scale per input column beats one per row.

    Args:
        seed: seed of the draws.

    Returns:
        ``{"synthetic": w, "synthetic, one outlier column": w_spiky}``, float32.
    """
    gen = _generator(seed)
    plain = torch.randn(64, 256, generator=gen) * 0.05
    spiky = torch.randn(64, 256, generator=gen) * 0.05
    spiky[:, 17] *= 40
    return {"synthetic": plain, "synthetic, one outlier column": spiky}


def outlier_feature_activations(tokens: int = 256, features: int = 256, out_features: int = 128,
                                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations with a few systematic outlier features (as in large LMs), and a weight matrix.

    Notebook 06's threshold widget: features 7, 60, 131 and 200 reach about 25, 12, 8 and 3.5 (times a
    random factor in [0.5, 1.5) and a random sign per token); the others have standard deviation 0.7.

    Args:
        tokens: rows of the activations.
        features: columns of the activations (at least 201, for the outlier features).
        out_features: rows of the weight.
        seed: seed of the draws.

    Returns:
        ``(x, w)``: float32 activations ``[tokens, features]`` and weight ``[out_features, features]``
        (variance ``1 / features``).
    """
    gen = _generator(seed)
    x = torch.randn(tokens, features, generator=gen) * 0.7
    for col, size in ((7, 25.0), (60, 12.0), (131, 8.0), (200, 3.5)):
        x[:, col] = torch.randn(tokens, generator=gen).sign() * size * (0.5 + torch.rand(tokens, generator=gen))
    return x, _linear_weight(out_features, features, gen)


def correlated_feature_layer(correlation: float, outlier_scale: float, out_features: int = 64,
                             in_features: int = 128, tokens: int = 2048,
                             seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A weight and two input sets (calibration, held out) with correlated, unevenly scaled features.

    Notebook 07's GPTQ widget: the inputs share a 4-dimensional common factor with weight
    ``correlation``, and every 16th feature is ``outlier_scale`` times larger.

    Args:
        correlation: in ``[0, 1]``: 0, independent features; near 1, all features move together.
        outlier_scale: the factor of every 16th input feature.
        out_features, in_features: the weight's shape.
        tokens: rows of each input set.
        seed: seed of the draws.

    Returns:
        ``(W, X_calibration, X_held_out)``: float32 ``[out_features, in_features]`` and twice
        ``[tokens, in_features]``.
    """
    gen = _generator(seed)
    W = _linear_weight(out_features, in_features, gen)
    loading = torch.randn(4, in_features, generator=gen)
    feature_scale = _feature_scales(in_features, outlier_scale)

    def inputs(n: int) -> torch.Tensor:
        z = torch.randn(n, in_features, generator=gen)
        common = torch.randn(n, 4, generator=gen) @ loading / 2
        return (math.sqrt(1 - correlation) * z + math.sqrt(correlation) * common) * feature_scale

    return W, inputs(tokens), inputs(tokens)


def heavy_tailed_weight(out_features: int = 128, in_features: int = 256, seed: int = 0) -> torch.Tensor:
    """A heavy-tailed weight matrix, like a trained layer's: 0.02 times a Student-t with 4 degrees of freedom.

    Notebook 09's HQQ widget (and tests/library/test_hqq.py) quantize it.

    Args:
        out_features, in_features: the shape.
        seed: seed of the draws.

    Returns:
        float32 ``[out_features, in_features]`` (standard deviation about 0.028).
    """
    return _student_t((out_features, in_features), 4, _generator(seed), scale=0.02)


def heavy_tailed_activation(n: int = 100_000, df: int = 3, seed: int = 0) -> torch.Tensor:
    """A heavy-tailed sample, like an activation with outliers: ``0.5 +`` a Student-t with ``df`` degrees of freedom.

    Notebook 04's observers and its observer widget calibrate on it (smaller ``df``: heavier tail).

    Args:
        n: the number of values.
        df: the degrees of freedom, an int >= 1 (1 is a Cauchy sample; the variance is finite from 3 on).
        seed: seed of the draws.

    Returns:
        float32 ``[n]``.
    """
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an int >= 1, got {df!r}")
    return 0.5 + _student_t((n,), df, _generator(seed))


def outlier_feature_layer(outlier_scale: float, out_features: int = 64, in_features: int = 128, tokens: int = 1024,
                          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight and inputs whose every 16th feature is ``outlier_scale`` times larger.

    Notebook 12's pruning widget: the case where Wanda (|weight| x input norm) keeps weights that
    magnitude pruning drops.

    Args:
        outlier_scale: the factor of every 16th input feature.
        out_features, in_features: the weight's shape.
        tokens: rows of the inputs.
        seed: seed of the draws.

    Returns:
        ``(W, X)``: float32 ``[out_features, in_features]`` and ``[tokens, in_features]``.
    """
    gen = _generator(seed)
    W = _linear_weight(out_features, in_features, gen)
    X = torch.randn(tokens, in_features, generator=gen) * _feature_scales(in_features, outlier_scale)
    return W, X
