"""Whole-model weight quantization of causal LMs: the plumbing shared by GPTQ, AWQ, HQQ and RTN.

- ``linear_layers``: the ``nn.Linear`` modules a method quantizes (``lm_head`` is kept, as in
  the GPTQ and AWQ papers; the course LM ties it to the embedding anyway).
- ``calibration_ids``: calibration token windows from the course corpus (never the eval split).
- ``decoder_blocks`` / ``capture_block_inputs`` / ``run_block``: feed calibration data through
  the model one transformer block at a time, so a method can quantize block ``i`` on the
  outputs of the already-quantized blocks ``0 .. i-1`` (the sequential recipe of GPTQ and AWQ).
- ``quantize_model_rtn``: round-to-nearest of every Linear, the baseline in every table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .granularity import fake_quantize_weight
from .validation import check_int

__all__ = [
    "linear_layers",
    "decoder_blocks",
    "calibration_ids",
    "capture_block_inputs",
    "run_block",
    "quantize_linear_weights",
    "quantize_model_rtn",
]


def linear_layers(module: nn.Module, skip: Sequence[str] = ("lm_head",)) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` submodules of ``module`` by qualified name, in definition order.

    Args:
        module: a model or one of its blocks.
        skip: names (or name suffixes) to leave out, e.g. ``("lm_head",)``.

    Returns:
        ``{name: linear}``; for a transformers Llama block the names are ``self_attn.q_proj``,
        ..., ``mlp.down_proj``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    return {name: m for name, m in module.named_modules()
            if isinstance(m, nn.Linear) and not any(name == s or name.endswith("." + s) for s in skip)}


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a transformers causal LM (Llama/Mistral/Qwen, OPT, GPT-2).

    Args:
        model: a transformers causal LM (or its base model).

    Returns:
        nn.ModuleList: the blocks, first to last (the live modules).
    """
    for path in ("model.layers", "model.decoder.layers", "transformer.h"):
        obj = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise TypeError(f"model must be a transformers causal LM with blocks at model.layers, "
                    f"model.decoder.layers or transformer.h; got {type(model).__name__}")


def calibration_ids(tokenizer, n_samples: int = 128, seq_len: int = 128, seed: int = 0,
                    text: str | None = None) -> torch.Tensor:
    """Random windows of ``seq_len`` tokens from the calibration text (the course corpus' calib split).

    Args:
        tokenizer: the model's tokenizer.
        n_samples: number of windows (GPTQ's paper uses 128).
        seq_len: tokens per window.
        seed: windows are drawn with this seed (same seed, same windows).
        text: the calibration text; defaults to ``course_lib.data.corpus_text("calib")``.

    Returns:
        int64 tensor ``[n_samples, seq_len]`` on the CPU.
    """
    check_int(n_samples, "n_samples", low=1)
    check_int(seq_len, "seq_len", low=2)
    if text is None:
        from .data import corpus_text
        text = corpus_text("calib")
    ids = torch.as_tensor(tokenizer(text)["input_ids"], dtype=torch.long).reshape(-1)
    if ids.numel() <= seq_len:
        raise ValueError(f"seq_len={seq_len} must be smaller than the calibration text ({ids.numel()} tokens)")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len, (n_samples,), generator=gen)
    return torch.stack([ids[s:s + seq_len] for s in starts.tolist()])


class _Stop(Exception):
    """Raised by the capture hook once the first block's inputs are recorded."""


@torch.no_grad()
def capture_block_inputs(model: nn.Module, ids: torch.Tensor, batch_size: int = 32
                         ) -> list[tuple[torch.Tensor, dict]]:
    """Run the embedding (and whatever precedes the first block) and record the first block's inputs.

    Args:
        model: a transformers causal LM (see ``decoder_blocks``).
        ids: token ids ``[n_samples, seq_len]``.
        batch_size: samples per forward pass.

    Returns:
        One ``(hidden_states, kwargs)`` pair per batch: the hidden states ``[batch, seq, hidden]``
        entering block 0 and the keyword arguments the model passes to every block (attention
        mask, position embeddings, ...). Feed them to ``run_block`` block after block.
    """
    check_int(batch_size, "batch_size", low=1)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype != torch.long:
        raise ValueError(f"ids must be an int64 tensor [n_samples, seq_len], got "
                         f"{type(ids).__name__ if not isinstance(ids, torch.Tensor) else (ids.dtype, tuple(ids.shape))}")
    blocks = decoder_blocks(model)
    device = next(model.parameters()).device
    captured: list[tuple[torch.Tensor, dict]] = []

    def hook(_module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "past_key_value", "use_cache")}
        captured.append((hidden.detach(), kwargs))
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for start in range(0, ids.shape[0], batch_size):
            try:
                model(ids[start:start + batch_size].to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return captured


@torch.no_grad()
def run_block(block: nn.Module, inputs: list[tuple[torch.Tensor, dict]]) -> list[tuple[torch.Tensor, dict]]:
    """Outputs of one transformer block on captured inputs, in the same format (input to the next block).

    Args:
        block: one decoder layer.
        inputs: ``(hidden_states, kwargs)`` pairs captured at the block's input.

    Returns:
        list[tuple[torch.Tensor, dict]]: ``(block output, the same kwargs)`` for each input.
    """
    outputs = []
    for hidden, kwargs in inputs:
        out = block(hidden, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        outputs.append((out, kwargs))
    return outputs


def quantize_linear_weights(model: nn.Module, fn: Callable[[str, nn.Linear], torch.Tensor],
                            skip: Sequence[str] = ("lm_head",), progress: bool = True) -> nn.Module:
    """Replace every Linear's weight by ``fn(name, linear)`` (a dequantized tensor of the same shape), in place.

    Args:
        model: modified in place.
        fn: ``fn(name, linear)`` -> the new (dequantized) weight, ``linear.weight``'s shape.
        skip: names (suffixes) of Linears left unchanged.
        progress: show a tqdm bar.

    Returns:
        nn.Module: ``model`` itself.
    """
    from tqdm.auto import tqdm

    layers = linear_layers(model, skip)
    for name, linear in tqdm(layers.items(), desc="quantizing", disable=not progress, leave=False):
        new = fn(name, linear)
        if not isinstance(new, torch.Tensor) or new.shape != linear.weight.shape:
            raise ValueError(f"fn must return a tensor of shape {tuple(linear.weight.shape)} for {name}, "
                             f"got {getattr(new, 'shape', type(new).__name__)}")
        with torch.no_grad():
            linear.weight.copy_(new)
    return model


def quantize_model_rtn(model: nn.Module, bits: int, group_size: int | None = None, symmetric: bool = False,
                       skip: Sequence[str] = ("lm_head",), progress: bool = False) -> nn.Module:
    """Round-to-nearest quantization of every Linear weight (per output channel or per group), in place.

    Returns the model (weights replaced by their dequantized values: "fake" quantization, which
    gives the same outputs as a packed-int kernel up to floating-point summation order).

    Args:
        model: modified in place.
        bits: code width (2 to 8).
        group_size: None (per output channel) or a divisor of ``in_features``.
        symmetric: symmetric grid (zero point 0) instead of min-max.
        skip: names (suffixes) of Linears left in full precision.
        progress: show a tqdm bar.

    Returns:
        nn.Module: ``model`` itself.
    """
    return quantize_linear_weights(
        model, lambda _name, lin: fake_quantize_weight(lin.weight.data, bits, group_size, symmetric),
        skip=skip, progress=progress)
