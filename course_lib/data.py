"""The course's data, all shipped or bundled, so that every notebook runs offline.

- :func:`load_digits`: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes)
  as train/test tensors, for the QAT, BitNet, distillation and pruning training loops;
- :func:`sentence_pairs`: a small sentence-similarity set written for this course, to score
  MiniLM's embeddings before and after quantization;
- :func:`corpus_text`: the calibration and evaluation texts of the course LM (from the Python
  3.11 documentation, PSF licence; see docs/COURSE_LM.md).
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import torch

__all__ = ["ASSETS_DIR", "load_digits", "sentence_pairs", "corpus_text", "CORPUS_SPLITS"]

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
