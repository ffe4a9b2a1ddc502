"""Evaluation for the course: perplexity, accuracy, embedding similarity, size and latency.

Every notebook measures quality and cost with these functions, so that a table in notebook 07
(GPTQ) and one in notebook 14 (capstone) mean the same thing:

- :func:`perplexity`: sliding-window perplexity of a causal LM on a text (the bundled course LM,
  gpt2, any transformers causal LM);
- :func:`unigram_perplexity`: the no-context baseline a language model has to beat;
- :func:`accuracy`: top-1 accuracy of a classifier (the digits models);
- :func:`embedding_cosine` and :func:`spearman`: quality of sentence embeddings (MiniLM);
- :func:`granularity_sweep`: notebook 03's sweep, every Linear of the sentence encoder
  fake-quantized at each granularity setting (``granularity.quantized_linears``), with its
  embeddings' cosine to the fp32 ones;
- :func:`model_size_bytes`: bytes of a model's weights as stored, or as they would be stored
  in another dtype or in a packed k-bit format with per-group scales;
- :func:`measure_latency`: wall-clock timing with warm-up and CUDA synchronization;
- :func:`quantization_table` and :func:`format_table`: the method x bits x group table of
  notebooks 07-09 and the capstone (perplexity, size, quantization time), one call.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .granularity import quantized_linears

__all__ = [
    "perplexity",
    "unigram_perplexity",
    "accuracy",
    "embedding_cosine",
    "spearman",
    "granularity_sweep",
    "model_size_bytes",
    "measure_latency",
    "quantization_table",
    "format_table",
]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _check_positive_int(value, name: str, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' logger (e.g. the 'sequence longer than model_max_length' note)."""
    logger = logging.getLogger("transformers")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _model_input_device(model: torch.nn.Module) -> torch.device:
    """Device where a model expects its inputs: that of its input embeddings, else of any parameter."""
    get_emb = getattr(model, "get_input_embeddings", None)
    if callable(get_emb):
        try:
            emb = get_emb()
            if emb is not None and getattr(emb, "weight", None) is not None:
                return emb.weight.device
        except (NotImplementedError, AttributeError):
            pass
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _as_1d_long(ids, name: str) -> torch.Tensor:
    if isinstance(ids, torch.Tensor):
        t = ids
    elif isinstance(ids, (list, tuple, range)):
        try:
            t = torch.as_tensor(list(ids), dtype=torch.long)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must hold integer token ids: {exc}") from None
    else:
        try:  # numpy arrays and other array-likes
            t = torch.as_tensor(ids)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a 1-D tensor or sequence of token ids, got {type(ids).__name__}") from None
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    return t.to(torch.long).cpu()


# --------------------------------------------------------------------------------------
# language models
# --------------------------------------------------------------------------------------
def perplexity(
    model,
    tokenizer,
    text: str,
    max_length: int | None = None,
    stride: int | None = None,
    device=None,
    max_tokens: int | None = None,
    *,
    batch_size: int = 4,
) -> float:
    """Perplexity of a causal language model on a text, with strided sliding windows.

    The text is tokenized once (with the tokenizer's default special tokens, as in the Hugging
    Face guide "Perplexity of fixed-length models") into ``T`` tokens. Windows of at most
    ``max_length`` tokens start every ``stride`` tokens; each window scores only the tokens
    that no earlier window scored (its last ``end - previous_end`` positions), with the tokens
    before them as context. The result is ``exp(total NLL / number of scored tokens)`` (NLL in
    nats), each token's NLL summed exactly (no per-window averaging).

    - ``stride < max_length``: every token from the second one on is scored exactly once.
    - ``stride == max_length`` (the default): disjoint windows, the convention of the GPTQ and
      AWQ papers' tables; the first token of each window has no context and is not scored, so
      a window of ``L`` tokens scores ``L - 1``. Fastest; a smaller stride gives each
      prediction more context and a somewhat lower perplexity.

    Args:
        model: a transformers causal LM (``model(input_ids).logits`` has shape
            ``[batch, seq, vocab]``); put it on the device you want first. Its training mode is
            restored afterwards.
        tokenizer: the model's tokenizer (callable on a string, returns ``input_ids``).
        text: the evaluation text (non-empty ``str``).
        max_length: window length in tokens; default ``model.config.max_position_embeddings``
            (1024 when the config has none).
        stride: step between window starts, ``1 <= stride <= max_length``; default
            ``max_length`` (disjoint windows).
        device: where the input ids go; default the device of the model's input embeddings.
        max_tokens: evaluate only the first ``max_tokens`` tokens (at least 2); default all.
        batch_size: how many full-length windows run through the model at once.

    Returns:
        The perplexity, a Python float ``>= 1``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a causal LM), got {type(model).__name__}")
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be a callable tokenizer, got {type(tokenizer).__name__}")
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text must not be empty")
    _check_positive_int(max_length, "max_length", allow_none=True)
    _check_positive_int(stride, "stride", allow_none=True)
    _check_positive_int(max_tokens, "max_tokens", allow_none=True)
    _check_positive_int(batch_size, "batch_size")

    if max_length is None:
        config = getattr(model, "config", None)
        max_length = getattr(config, "max_position_embeddings", None) or 1024
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (one context token and one target), got {max_length}")
    if stride is None:
        stride = max_length
    if stride > max_length:
        raise ValueError(f"stride must be <= max_length ({max_length}), got {stride}")

    with _quiet_transformers():
        enc = tokenizer(text, return_tensors="pt", verbose=False)
    ids = enc["input_ids"][0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    total = ids.numel()
    if total < 2:
        raise ValueError(f"text (after max_tokens) has {total} token(s); perplexity needs at least 2")

    device = _model_input_device(model) if device is None else torch.device(device)
    ids = ids.to(device)

    # The windows: (begin, end, number of new targets at the end of the window).
    windows = []
    prev_end = 0
    for begin in range(0, total, stride):
        end = min(begin + max_length, total)
        windows.append((begin, end, end - prev_end))
        prev_end = end
        if end == total:
            break

    was_training = model.training
    model.eval()
    nll_sum = 0.0
    n_targets = 0
    try:
        with torch.inference_mode():
            i = 0
            while i < len(windows):
                # Batch consecutive windows of the same length.
                length = windows[i][1] - windows[i][0]
                group = [windows[i]]
                while (len(group) < batch_size and i + len(group) < len(windows)
                       and windows[i + len(group)][1] - windows[i + len(group)][0] == length):
                    group.append(windows[i + len(group)])
                i += len(group)
                batch = torch.stack([ids[b:e] for b, e, _ in group])  # [B, L]
                logits = model(input_ids=batch).logits  # [B, L, V]
                logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts positions 1..L-1
                target_logp = logp.gather(-1, batch[:, 1:, None]).squeeze(-1)  # [B, L-1]
                for row, (_, _, n_new) in enumerate(group):
                    n_new = min(n_new, length - 1)  # a window's first token has no context
                    nll_sum -= float(target_logp[row, length - 1 - n_new:].double().sum())
                    n_targets += n_new
    finally:
        model.train(was_training)
    return float(math.exp(nll_sum / n_targets))


def unigram_perplexity(train_ids, eval_ids, vocab_size: int) -> float:
    """Perplexity of an add-one (Laplace) smoothed unigram model: the no-context baseline.

    ``p(w) = (count_train(w) + 1) / (N_train + vocab_size)``; the perplexity is
    ``exp(-mean over eval tokens of log p(w))``. A language model that uses context must beat it.

    Args:
        train_ids: 1-D token ids the counts come from (tensor, list or array of ints).
        eval_ids: 1-D token ids to score.
        vocab_size: number of token ids; every id must lie in ``[0, vocab_size)``.

    Returns:
        The perplexity, a Python float in ``[1, vocab_size * (N_train + V) / V]``.
    """
    _check_positive_int(vocab_size, "vocab_size")
    train = _as_1d_long(train_ids, "train_ids")
    ev = _as_1d_long(eval_ids, "eval_ids")
    for name, t in (("train_ids", train), ("eval_ids", ev)):
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{name} must lie in [0, vocab_size={vocab_size}), got ids in [{lo}, {hi}]")
    counts = torch.bincount(train, minlength=vocab_size).double()
    logp = torch.log(counts + 1.0) - math.log(train.numel() + vocab_size)
    return float(torch.exp(-logp[ev].mean()))


# --------------------------------------------------------------------------------------
# classifiers and embeddings
# --------------------------------------------------------------------------------------
def accuracy(model, X: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of a classifier.

    Args:
        model: a module mapping a batch ``[B, ...]`` to logits ``[B, num_classes]``; it runs in
            eval mode under ``torch.inference_mode`` and its training mode is restored afterwards.
        X: inputs ``[N, ...]`` (moved in batches to the model's device).
        y: integer labels ``[N]``.
        batch_size: examples per forward pass.

    Returns:
        The fraction of correct predictions, a Python float in ``[0, 1]``.
    """
    if not isinstance(model, torch.nn.Module) and not callable(model):
        raise TypeError(f"model must be a torch.nn.Module or callable, got {type(model).__name__}")
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"X must be a torch.Tensor, got {type(X).__name__}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 1 or y.is_floating_point():
        raise ValueError(f"y must be a 1-D tensor of integer labels, got shape {tuple(y.shape)} dtype {y.dtype}")
    if X.dim() < 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X and y must have the same number of rows, got X {tuple(X.shape)} and y {tuple(y.shape)}")
    if X.shape[0] == 0:
        raise ValueError("X must not be empty")
    _check_positive_int(batch_size, "batch_size")

    is_module = isinstance(model, torch.nn.Module)
    device = _model_input_device(model) if is_module else X.device
    was_training = model.training if is_module else False
    if is_module:
        model.eval()
    correct = 0
    try:
        with torch.inference_mode():
            for start in range(0, X.shape[0], batch_size):
                xb = X[start:start + batch_size].to(device)
                logits = model(xb)
                if logits.dim() != 2 or logits.shape[0] != xb.shape[0]:
                    raise ValueError(f"model must return logits [batch, num_classes], got shape {tuple(logits.shape)}")
                pred = logits.argmax(dim=-1).cpu()
                correct += int((pred == y[start:start + batch_size].cpu()).sum())
    finally:
        if is_module:
            model.train(was_training)
    return correct / X.shape[0]


def embedding_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Row-wise cosine similarity of two sets of embeddings.

    Args:
        a: embeddings ``[N, D]`` (or one embedding ``[D]``).
        b: embeddings of the same shape as ``a``.
        eps: lower bound on the norms, so that a zero row gives 0, not NaN.

    Returns:
        A float32 tensor ``[N]`` (0-d for 1-D inputs) of cosines in ``[-1, 1]``, on ``a``'s device.
    """
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.dim() not in (1, 2):
            raise ValueError(f"{name} must be 1-D [D] or 2-D [N, D], got shape {tuple(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"{name} must not be empty")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a32, b32 = a.float(), b.to(a.device).float()
    dot = (a32 * b32).sum(-1)
    norms = a32.norm(dim=-1).clamp_min(eps) * b32.norm(dim=-1).clamp_min(eps)
    return (dot / norms).clamp(-1.0, 1.0)


def _rank_average(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n with ties given the mean of the ranks they span (float64)."""
    n = x.numel()
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks_sorted = torch.empty(n, dtype=torch.float64)
    start = 0
    values = sorted_x.tolist()
    while start < n:
        end = start
        while end + 1 < n and values[end + 1] == values[start]:
            end += 1
        ranks_sorted[start:end + 1] = (start + end) / 2.0 + 1.0
        start = end + 1
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = ranks_sorted
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation, ties given average ranks (like ``scipy.stats.spearmanr``).

    Args:
        x: 1-D sequence of numbers (tensor, list, array), length ``n >= 2``.
        y: 1-D sequence of the same length.

    Returns:
        The Pearson correlation of the two rank vectors, a Python float in ``[-1, 1]``;
        ``nan`` when either input is constant (the correlation is undefined).
    """
    tensors = []
    for name, v in (("x", x), ("y", y)):
        try:
            t = torch.as_tensor(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a 1-D sequence of numbers, got {type(v).__name__}") from None
        if t.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
        if t.numel() < 2:
            raise ValueError(f"{name} must have at least 2 values, got {t.numel()}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} must be finite (no NaN or Inf)")
        tensors.append(t)
    tx, ty = tensors
    if tx.numel() != ty.numel():
        raise ValueError(f"x and y must have the same length, got {tx.numel()} and {ty.numel()}")
    rx, ry = _rank_average(tx), _rank_average(ty)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    if denom == 0.0:
        return float("nan")
    return max(-1.0, min(1.0, float((rx * ry).sum()) / denom))


def granularity_sweep(model: torch.nn.Module, tokenizer, sentences, settings, progress: bool = True) -> list[dict]:
    """Weight error and sentence-embedding cosine of ``model`` under each quantization setting.

    Args:
        model: a sentence encoder (e.g. ``course_lib.models.load_minilm()``'s model); restored afterwards.
        tokenizer: its tokenizer.
        sentences: a non-empty list of strings, embedded with ``course_lib.models.embed``.
        settings: an iterable of ``(bits, granularity, group_size)`` tuples.
        progress: show a tqdm progress bar.

    Returns:
        One dict per setting (the rows ``course_lib.plots.granularity.plot_pareto`` draws): ``bits``,
        ``granularity``, ``group_size``, ``label``, ``effective_bits``, ``mse`` (mean squared weight
        error over all Linear weights), ``rel_error`` (``sse / sum_sq``), ``cosine`` (mean cosine of
        quantized vs fp32 embeddings) and ``min_cosine``.
    """
    from .models import embed  # imports transformers: only when a sweep runs

    settings = list(settings)
    if not settings:
        raise ValueError("settings must not be empty")
    reference = embed(model, tokenizer, sentences)
    rows = []
    if progress:
        from tqdm.auto import tqdm

        settings_iter = tqdm(settings, desc="quantize + embed", leave=False)
    else:
        settings_iter = settings
    for bits, granularity, group_size in settings_iter:
        with quantized_linears(model, bits, granularity, group_size) as stats:
            cos = embedding_cosine(embed(model, tokenizer, sentences), reference)
        label = f"group {group_size}" if granularity == "group" else f"per-{granularity}"
        rows.append({"bits": bits, "granularity": granularity, "group_size": group_size, "label": label,
                     "effective_bits": stats["effective_bits"], "mse": stats["sse"] / stats["numel"],
                     "rel_error": stats["sse"] / stats["sum_sq"], "cosine": float(cos.mean()),
                     "min_cosine": float(cos.min())})
    return rows


# --------------------------------------------------------------------------------------
# cost: size and latency
# --------------------------------------------------------------------------------------
def _is_weight_matrix_module(module: torch.nn.Module) -> tuple[bool, int]:
    """Whether a module holds a 2-D weight that weight-only quantization packs, and its input dim.

    nn.Linear stores ``[out, in]``; transformers' GPT-2 ``Conv1D`` stores ``[in, out]``.
    """
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        return False, 0
    if isinstance(module, torch.nn.Linear):
        return True, w.shape[1]
    if type(module).__name__ == "Conv1D":
        return True, w.shape[0]
    return False, 0


def model_size_bytes(
    model: torch.nn.Module,
    bits_per_param: float | None = None,
    dtype: torch.dtype | None = None,
    group_size: int | None = None,
    scale_bits: int = 16,
    *,
    exclude: Sequence[str] = ("lm_head",),
) -> int:
    """Bytes of a model's weights: as stored now, in another dtype, or packed to k bits.

    What is counted: every tensor of ``model.state_dict()`` (parameters and persistent buffers,
    so packed weights and scales of quantized layers count too), each shared tensor once
    (tied embeddings are not counted twice).

    - Neither ``bits_per_param`` nor ``dtype``: each tensor at its current element size.
    - ``dtype``: every floating-point tensor as if cast to ``dtype`` (others unchanged).
    - ``bits_per_param``: the weight matrices of ``nn.Linear`` (and GPT-2 ``Conv1D``) modules
      take ``bits_per_param`` bits per element, plus one ``scale_bits`` scale per group of
      ``group_size`` consecutive weights along the input dimension (``group_size=None``: one
      scale per output channel). Everything else (embeddings, norms, biases, modules whose
      name ends with an entry of ``exclude``) stays as stored now, or at ``dtype`` when given.
      For an asymmetric format with a zero-point per group, pass ``scale_bits`` = scale bits
      + zero-point bits (e.g. 16 + 4).

    Args:
        model: the module to measure.
        bits_per_param: bits per packed weight, ``0 < bits <= 32`` (e.g. 4, 3, 1.58).
        dtype: a floating-point torch dtype (e.g. ``torch.float16``).
        group_size: weights per scale (>= 1), only with ``bits_per_param``.
        scale_bits: bits per group scale (>= 0), only with ``bits_per_param``.
        exclude: module-name suffixes whose weights are never packed (default ``("lm_head",)``).

    Returns:
        The size in bytes, an int (each tensor's bits rounded up to whole bytes).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if bits_per_param is not None:
        if isinstance(bits_per_param, bool) or not isinstance(bits_per_param, (int, float)):
            raise TypeError(f"bits_per_param must be a number or None, got {type(bits_per_param).__name__}")
        if not (0 < bits_per_param <= 32) or not math.isfinite(bits_per_param):
            raise ValueError(f"bits_per_param must be in (0, 32], got {bits_per_param}")
    if dtype is not None:
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype or None, got {type(dtype).__name__}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    if group_size is not None:
        if bits_per_param is None:
            raise ValueError("group_size is only meaningful together with bits_per_param")
        _check_positive_int(group_size, "group_size")
    if isinstance(scale_bits, bool) or not isinstance(scale_bits, int):
        raise TypeError(f"scale_bits must be an int, got {type(scale_bits).__name__}")
    if scale_bits < 0:
        raise ValueError(f"scale_bits must be >= 0, got {scale_bits}")
    if isinstance(exclude, str):
        exclude = (exclude,)

    # Which tensors are packable weight matrices (and their input dimension).
    packable: dict[int, int] = {}
    if bits_per_param is not None:
        for name, module in model.named_modules():
            ok, in_dim = _is_weight_matrix_module(module)
            if ok and not any(name.endswith(s) for s in exclude if s):
                packable[id(module.weight)] = in_dim
        excluded_ids = {
            id(m.weight) for n, m in model.named_modules()
            if _is_weight_matrix_module(m)[0] and any(n.endswith(s) for s in exclude if s)
        }
        for k in excluded_ids:  # a tensor shared with an excluded module is not packed
            packable.pop(k, None)

    seen: set[tuple] = set()
    total_bits = 0
    for tensor in model.state_dict(keep_vars=True).values():
        if not isinstance(tensor, torch.Tensor):
            continue
        key = (tensor.device.type, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if tensor.data_ptr() != 0:
            if key in seen:
                continue
            seen.add(key)
        n = tensor.numel()
        if id(tensor) in packable:
            in_dim = packable[id(tensor)]
            rows = n // in_dim
            groups_per_row = 1 if group_size is None else math.ceil(in_dim / group_size)
            bits = math.ceil(n * bits_per_param) + rows * groups_per_row * scale_bits
        elif dtype is not None and tensor.is_floating_point():
            bits = n * torch.finfo(dtype).bits
        else:
            bits = n * tensor.element_size() * 8
        total_bits += math.ceil(bits / 8) * 8
    return total_bits // 8


def measure_latency(fn: Callable, *args, warmup: int = 3, repeats: int = 20, **kwargs) -> dict:
    """Time ``fn(*args, **kwargs)``: warm-up calls, then ``repeats`` timed calls.

    On a machine with CUDA the GPU is synchronized before the clock starts and after each
    call, so that asynchronous kernel launches are timed to completion.

    Args:
        fn: the callable to time.
        *args: positional arguments for ``fn``.
        warmup: untimed calls first (>= 0), e.g. for caches, lazy init and kernel autotuning.
        repeats: timed calls (>= 1).
        **kwargs: keyword arguments for ``fn``.

    Returns:
        ``{"median": s, "mean": s, "min": s, "max": s, "std": s, "repeats": n, "times": [s, ...]}``
        with times in seconds.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    _check_positive_int(repeats, "repeats")
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else (lambda: None)
    for _ in range(warmup):
        fn(*args, **kwargs)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        sync = torch.cuda.synchronize
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        sync()
        times.append(time.perf_counter() - t0)
    return {
        "median": statistics.median(times),
        "mean": statistics.fmean(times),
        "min": min(times),
        "max": max(times),
        "std": statistics.pstdev(times) if len(times) > 1 else 0.0,
        "repeats": repeats,
        "times": times,
    }


# --------------------------------------------------------------------------------------
# the comparison table of weight-quantization methods
# --------------------------------------------------------------------------------------
#: (bits, group_size) settings of the course's tables: per output channel and group 128, at 4 and 3 bits.
TABLE_SETTINGS = ((4, None), (4, 128), (3, None), (3, 128))


def quantization_table(
    methods: dict,
    settings: Sequence[tuple[int, int | None]] = TABLE_SETTINGS,
    *,
    model_name=None,
    max_tokens: int | None = None,
    include_fp: bool = True,
    scale_bits: int = 32,
    progress: bool = True,
    eval_text: str | None = None,
    max_length: int | None = None,
    device=None,
) -> list[dict]:
    """Quantize a fresh copy of a causal LM with each method at each setting and measure it.

    Args:
        methods: ``{name: fn}`` where ``fn(model, tokenizer, bits, group_size)`` quantizes the
            model's weights in place (e.g. ``lambda m, t, b, g: quantize_model_rtn(m, b, g)``).
        settings: ``(bits, group_size)`` pairs; ``group_size=None`` is one scale per output channel.
        model_name: passed to ``course_lib.models.load_causal_lm`` (None: the course LM).
        max_tokens: evaluate on the first ``max_tokens`` tokens of the eval split (None: all of it).
        include_fp: add the unquantized model's row first.
        scale_bits: bits stored per group for the size column (fp16 scale + fp16 zero point = 32).
        progress: show a progress bar over the rows.
        eval_text: the text perplexity is measured on (default: the course corpus' eval split).
        max_length: perplexity window in tokens (default: the model's context, as ``perplexity``).
        device: where each fresh model is quantized and evaluated (default ``"cpu"``).

    Returns:
        One dict per row: ``method``, ``bits`` (None for fp), ``group_size``, ``perplexity``,
        ``size_mb`` (weights as they would be stored packed, ``model_size_bytes`` / 1e6) and
        ``seconds`` (wall time of the quantization call).
    """
    from tqdm.auto import tqdm

    from .data import corpus_text
    from .models import load_causal_lm

    if not isinstance(methods, dict) or not methods or not all(callable(f) for f in methods.values()):
        raise TypeError("methods must be a non-empty dict {name: fn(model, tokenizer, bits, group_size)}")
    settings = [tuple(s) for s in settings]
    for bits, group in settings:
        _check_positive_int(bits, "bits")
        _check_positive_int(group, "group_size", allow_none=True)
    if eval_text is not None and (not isinstance(eval_text, str) or not eval_text.strip()):
        raise ValueError("eval_text must be None or a non-empty str")
    text = corpus_text("eval") if eval_text is None else eval_text
    jobs = ([("fp32", None, None)] if include_fp else []) + [
        (name, bits, group) for name in methods for bits, group in settings]
    rows = []
    for name, bits, group in tqdm(jobs, desc="methods", disable=not progress):
        model, tokenizer = load_causal_lm(model_name, device="cpu" if device is None else device)
        seconds = 0.0
        if bits is not None:
            start = time.perf_counter()
            methods[name](model, tokenizer, bits, group)
            seconds = time.perf_counter() - start
        size = (model_size_bytes(model) if bits is None
                else model_size_bytes(model, bits_per_param=bits, group_size=group, scale_bits=scale_bits))
        rows.append({"method": name, "bits": bits, "group_size": group,
                     "perplexity": perplexity(model, tokenizer, text, max_length=max_length, max_tokens=max_tokens),
                     "size_mb": size / 1e6, "seconds": seconds})
    return rows


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts with the same keys); floats with 2-4 significant decimals.

    A ``seconds`` column's values carry their unit (``0.0219 s``): a reader sees a wall time, and the
    determinism test (tests/notebook_outputs.py) knows not to compare it between runs."""
    if not rows:
        raise ValueError("rows must not be empty")
    columns = list(columns or rows[0].keys())

    def cell(v, column):
        if v is None:
            return "-"
        if isinstance(v, float):
            text = f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"
            return text + " s" if column == "seconds" else text
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c), c) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
