"""Notebook 13, section 7: the KV cache of a decoder, and the cache quantized (int8 per token, KIVI).

When a decoder generates text, every new token attends to the keys and values of all the tokens before it.
Recomputing them at every step would cost the whole prefix again; a **KV cache** keeps them: the prompt is run
once (the prefill, causal attention inside it), then each step runs one token and appends its keys and values.
The cache grows with the context: per token it holds ``2 x layers x kv_heads x head_dim`` numbers, which at long
context outgrows the weights. Quantizing it is the same trade as quantizing weights, with one twist that KIVI
(Liu et al., "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache", ICML 2024, arXiv 2402.02750)
measured: keys have a few channels of large magnitude that persist across tokens, values do not, so keys want
one scale **per channel** (statistics over a group of tokens) and values one **per token** (statistics over a
group of channels).

This module gives the notebook:

- the **plumbing** of a Llama-architecture ``transformers`` model, so that the learner writes the cache and the
  attention, not the block: ``embed_tokens``, ``block_qkv`` (input norm, projections, RoPE through the model's own
  rotary embedding and ``apply_rotary_pos_emb``, so the keys are the model's bit for bit), ``block_output``
  (output projection, residual, MLP) and ``lm_logits`` (final norm, output layer);
- the references of the two exercises: ``greedy_generate`` (a cache written by hand, token for token the model's
  own ``generate(do_sample=False)``) and ``quantize_groups`` (asymmetric min-max quantization in groups along one
  axis: KIVI's quantizer, whose ``dim`` is the whole difference between keys and values), with
  ``dequantize_groups``;
- caches to measure with: ``KVCache`` (float32 or float16), ``Int8KVCache`` (absmax int8 per token, the rows of
  the notebook's ``quantize_rows_int8``) and ``QuantizedKVCache`` (KIVI: keys per channel, values per token, or
  any other pair of axes), with ``generate`` (greedy decoding through any cache) and ``decode_logits``
  (teacher-forced decoding, one token per step, for perplexity and greedy agreement).

How this follows KIVI and where it differs (docs/REFERENCES.md):

- the quantizer is KIVI's: ``scale = (max - min) / (2**bits - 1)`` and the float minimum as offset (no integer
  zero point), ``codes = round((x - min) / scale)``; keys are quantized after RoPE, as KIVI caches them;
- the recent tokens stay in full precision, as KIVI's residual: they are quantized a whole chunk of ``residual``
  tokens (a multiple of ``group_size``) at a time, when the full-precision part reaches that length, so between
  0 and ``residual - 1`` recent tokens are unquantized. KIVI does this for the keys; its values keep exactly the
  last ``residual`` tokens and quantize one token per step as it leaves that window. Here values follow the keys'
  rule, so that keys and values (and every pair of axes the notebook compares) have the same full-precision tail
  and a comparison of axes compares only the axes;
- KIVI's fused kernels multiply the query with the codes; this reference dequantizes each chunk once, when it is
  quantized, and attends over the dequantized values (the same numbers, without the speed). Memory is counted from
  the layout a kernel would use: codes packed ``bits / 8`` bytes each, scales and minimums in float16 (KIVI runs
  float16 models), the full-precision recent tokens in float16.

Every function runs on the model's device; generation and decoding run under ``torch.no_grad()``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .validation import FLOAT_DTYPES, check_int, check_module, check_tensor

__all__ = [
    "AXES",
    "KVCache",
    "Int8KVCache",
    "QuantizedKVCache",
    "embed_tokens",
    "block_qkv",
    "block_output",
    "lm_logits",
    "greedy_generate",
    "generate",
    "decode_logits",
    "quantize_groups",
    "dequantize_groups",
    "compare_decoding",
    "greedy_match",
]

#: the axis a cache tensor is quantized along: one (scale, min) per channel over a group of tokens, or one per
#: token over a group of channels
AXES = ("channel", "token")
_STAT_BYTES = 2  # a scale or a minimum, float16


# ----------------------------------------------------------------------------------------------
# plumbing: one Llama block in pieces


def _decoder(model) -> nn.Module:
    """``model.model`` of a Llama-architecture causal LM, after checking the parts the plumbing uses."""
    check_module(model, "model")
    inner = getattr(model, "model", None)
    parts = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, p) for p in parts) or not hasattr(model, "lm_head"):
        raise TypeError("model must be a Llama-architecture transformers causal LM (model.model.embed_tokens, "
                        f".layers, .norm, .rotary_emb and model.lm_head), got {type(model).__name__}")
    return inner


def _layer(model, layer) -> nn.Module:
    layers = _decoder(model).layers
    check_int(layer, "layer", low=0, high=len(layers) - 1)
    return layers[layer]


def _check_hidden(model, hidden, name: str = "hidden") -> None:
    check_tensor(hidden, name, dtypes=FLOAT_DTYPES, ndim=3)
    size = model.config.hidden_size
    if hidden.shape[-1] != size:
        raise ValueError(f"{name} must be [batch, tokens, {size}] (the model's hidden size), got {tuple(hidden.shape)}")


def _check_ids(input_ids, vocab_size: int, name: str = "input_ids") -> None:
    check_tensor(input_ids, name, dtypes=(torch.int64, torch.int32), ndim=2)
    if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size:
        raise ValueError(f"{name} must hold token ids in [0, {vocab_size}), got values in "
                         f"[{int(input_ids.min())}, {int(input_ids.max())}]")


def embed_tokens(model, input_ids: torch.Tensor) -> torch.Tensor:
    """The input embeddings of token ids.

    Args:
        model: a Llama-architecture ``transformers`` causal LM (the course LM).
        input_ids: int64 ``[B, T]`` token ids.

    Returns:
        ``[B, T, hidden_size]`` hidden states in the model's dtype, on its device.
    """
    inner = _decoder(model)
    _check_ids(input_ids, model.config.vocab_size)
    with torch.no_grad():
        return inner.embed_tokens(input_ids)


def block_qkv(model, layer: int, hidden: torch.Tensor, positions: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values of one block: input RMSNorm, the three projections, RoPE at ``positions``.

    RoPE uses the model's own rotary embedding and ``transformers``' ``apply_rotary_pos_emb``, so the keys are
    those the model computes and caches, bit for bit.

    Args:
        model: a Llama-architecture ``transformers`` causal LM.
        layer: the block's index, ``0 <= layer < num_hidden_layers``.
        hidden: ``[B, T, hidden_size]``, the block's input (the residual stream).
        positions: int64 ``[T]``, the positions of the ``T`` tokens in their sequence (``arange(T)`` for a
            prompt, ``[t]`` for the token at position ``t``), the same for every row of the batch.

    Returns:
        ``(q, k, v)``: ``q`` ``[B, num_heads, T, head_dim]``, ``k`` and ``v`` ``[B, num_kv_heads, T, head_dim]``
        (after RoPE for ``q`` and ``k``), in the model's dtype.
    """
    block = _layer(model, layer)
    _check_hidden(model, hidden)
    check_tensor(positions, "positions", dtypes=(torch.int64, torch.int32), ndim=1)
    if positions.shape[0] != hidden.shape[1]:
        raise ValueError(f"positions must have one entry per token of hidden ({hidden.shape[1]}), "
                         f"got {positions.shape[0]}")
    if int(positions.min()) < 0:
        raise ValueError(f"positions must be >= 0, got {int(positions.min())}")
    with torch.no_grad():
        return _qkv(model, block, hidden, positions.to(hidden.device, torch.int64))


def _qkv(model, block: nn.Module, hidden: torch.Tensor, positions: torch.Tensor):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    attn = block.self_attn
    b, t, _ = hidden.shape
    x = block.input_layernorm(hidden)
    q = attn.q_proj(x).view(b, t, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(b, t, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(b, t, -1, attn.head_dim).transpose(1, 2)
    cos, sin = model.model.rotary_emb(x, positions[None])
    return apply_rotary_pos_emb(q, k, cos, sin) + (v,)


def block_output(model, layer: int, hidden: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """The rest of one block: output projection of the attention, residual, post-attention RMSNorm, MLP, residual.

    Args:
        model: a Llama-architecture ``transformers`` causal LM.
        layer: the block's index.
        hidden: ``[B, T, hidden_size]``, the block's input (the same tensor given to ``block_qkv``).
        attn: ``[B, num_heads, T, head_dim]``, the attention's output per head (softmax-weighted values).

    Returns:
        ``[B, T, hidden_size]``: the block's output, the next block's input.
    """
    block = _layer(model, layer)
    _check_hidden(model, hidden)
    heads, head_dim = model.config.num_attention_heads, block.self_attn.head_dim
    check_tensor(attn, "attn", dtypes=FLOAT_DTYPES, ndim=4)
    b, t, _ = hidden.shape
    if tuple(attn.shape) != (b, heads, t, head_dim):
        raise ValueError(f"attn must be [B, num_heads, T, head_dim] = {(b, heads, t, head_dim)}, "
                         f"got {tuple(attn.shape)}")
    with torch.no_grad():
        return _output(block, hidden, attn)


def _output(block: nn.Module, hidden: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    b, h, t, d = attn.shape
    out = hidden + block.self_attn.o_proj(attn.to(hidden.dtype).transpose(1, 2).reshape(b, t, h * d))
    return out + block.mlp(block.post_attention_layernorm(out))


def lm_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """Next-token logits: the final RMSNorm and the output layer.

    Args:
        model: a Llama-architecture ``transformers`` causal LM.
        hidden: ``[B, T, hidden_size]``, the last block's output.

    Returns:
        ``[B, T, vocab_size]`` logits; position ``t`` scores the token at ``t + 1``.
    """
    inner = _decoder(model)
    _check_hidden(model, hidden)
    with torch.no_grad():
        return model.lm_head(inner.norm(hidden))


# ----------------------------------------------------------------------------------------------
# attention over a cache, generation


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """Softmax attention of ``q`` [B, H, T, D] over ``k``, ``v`` [B, Hkv, S, D] (S >= T); the last T keys are the
    queries' own tokens. Key/value heads are repeated for grouped-query attention; softmax in float32."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        t, s = q.shape[-2], k.shape[-2]
        allowed = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v


def _check_generation(model, input_ids, cache) -> "KVCache":
    _decoder(model)
    _check_ids(input_ids, model.config.vocab_size)
    if cache is None:
        return KVCache()
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a KVCache (or Int8KVCache, QuantizedKVCache), got {type(cache).__name__}")
    if cache.num_tokens:
        raise ValueError(f"cache must be empty (a fresh cache per sequence), it holds {cache.num_tokens} tokens")
    return cache


def _forward(model, ids: torch.Tensor, start: int, cache: "KVCache") -> torch.Tensor:
    """Run ``ids`` [B, T] at positions start .. start + T - 1 through every block, reading and extending the
    cache; return the last block's output [B, T, hidden]."""
    positions = torch.arange(start, start + ids.shape[1], device=ids.device)
    hidden = model.model.embed_tokens(ids)
    for layer, block in enumerate(model.model.layers):
        q, k, v = _qkv(model, block, hidden, positions)
        keys, values = cache._update(layer, k, v)
        hidden = _output(block, hidden, _attention(q, keys, values, causal=ids.shape[1] > 1))
    return hidden


def generate(model, input_ids: torch.Tensor, max_new_tokens: int, cache: "KVCache | None" = None) -> torch.Tensor:
    """Greedy decoding through a cache: prefill the prompt once, then one token per step.

    Every forward pass attends with its own tokens' keys and values in full precision and with the earlier tokens'
    as the cache stores them (``KVCache.update``): the prompt's attention is unquantized, as in KIVI. No stop at an
    end-of-sequence token: exactly ``max_new_tokens`` tokens are generated.

    Args:
        model: a Llama-architecture ``transformers`` causal LM.
        input_ids: int64 ``[B, T]``, ``T >= 1`` prompts of equal length (no padding).
        max_new_tokens: how many tokens to generate, ``>= 1``.
        cache: an empty ``KVCache`` (or ``Int8KVCache``, ``QuantizedKVCache``); default a new float32
            ``KVCache``. It is filled: afterwards it holds the ``T + max_new_tokens - 1`` tokens that were run.

    Returns:
        int64 ``[B, T + max_new_tokens]``: the prompts followed by the generated tokens.
    """
    cache = _check_generation(model, input_ids, cache)
    check_int(max_new_tokens, "max_new_tokens", low=1)
    tokens = [input_ids]
    with torch.no_grad():
        hidden = _forward(model, input_ids, 0, cache)
        for step in range(max_new_tokens):
            nxt = model.lm_head(model.model.norm(hidden[:, -1:])).argmax(dim=-1)
            tokens.append(nxt)
            if step + 1 < max_new_tokens:
                hidden = _forward(model, nxt, input_ids.shape[1] + step, cache)
    return torch.cat(tokens, dim=1)


def greedy_generate(model, input_ids: torch.Tensor, max_new_tokens: int
                    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Greedy generation with a hand-written KV cache (the exercise): the tokens and the cache's contents.

    The prompt runs once (causal attention inside it) and each of its blocks caches its keys and values; then
    each step runs the last token alone, appends its keys and values to every block's cache and attends over the
    whole cache. The tokens equal ``model.generate(input_ids, max_new_tokens=..., do_sample=False)`` when that
    does not stop early at an end-of-sequence token.

    Args:
        model: a Llama-architecture ``transformers`` causal LM.
        input_ids: int64 ``[B, T]``, ``T >= 1`` prompts of equal length.
        max_new_tokens: ``>= 1``.

    Returns:
        ``(tokens, cache)``: ``tokens`` int64 ``[B, T + max_new_tokens]``; ``cache`` a list with one
        ``(keys, values)`` pair per block, each ``[B, num_kv_heads, T + max_new_tokens - 1, head_dim]`` in the
        model's dtype (the last generated token is never run, so it has no keys).
    """
    cache = KVCache()
    tokens = generate(model, input_ids, max_new_tokens, cache)
    dtype = model.model.embed_tokens.weight.dtype
    return tokens, [(k.to(dtype), v.to(dtype)) for k, v in cache.contents()]


def decode_logits(model, input_ids: torch.Tensor, cache: "KVCache | None" = None, prefill: int = 1) -> torch.Tensor:
    """Teacher-forced decoding through a cache: prefill ``input_ids[:, :prefill]``, then feed the given tokens
    one per step; the logits that predict every token from ``prefill`` on.

    With a float32 ``KVCache`` and ``prefill=1`` the perplexity of these logits is that of the model on the same
    tokens (``course_lib.evaluate.perplexity`` with one window).

    Args:
        model: a Llama-architecture ``transformers`` causal LM.
        input_ids: int64 ``[B, T]``, ``T >= 2``.
        cache: an empty cache (default a new float32 ``KVCache``).
        prefill: how many tokens the first forward pass runs at once, ``1 <= prefill < T``.

    Returns:
        float32 ``[B, T - prefill, vocab_size]``: row ``i`` predicts ``input_ids[:, prefill + i]`` from the tokens
        before it.
    """
    cache = _check_generation(model, input_ids, cache)
    t = input_ids.shape[1]
    if t < 2:
        raise ValueError(f"input_ids must have at least 2 tokens (one to predict), got {t}")
    check_int(prefill, "prefill", low=1, high=t - 1)
    with torch.no_grad():
        hidden = _forward(model, input_ids[:, :prefill], 0, cache)
        head = lambda h: model.lm_head(model.model.norm(h)).float()  # noqa: E731
        logits = [head(hidden[:, -1:])]
        for pos in range(prefill, t - 1):
            hidden = _forward(model, input_ids[:, pos:pos + 1], pos, cache)
            logits.append(head(hidden))
    return torch.cat(logits, dim=1)


# ----------------------------------------------------------------------------------------------
# KIVI's quantizer


def _check_group_args(x_shape: tuple[int, ...], bits, group_size, dim) -> int:
    check_int(bits, "bits", low=1, high=8)
    check_int(dim, "dim", low=-len(x_shape), high=len(x_shape) - 1)
    check_int(group_size, "group_size", low=1)
    size = x_shape[dim]
    if size % group_size:
        raise ValueError(f"group_size={group_size} must divide the size of dim {dim} ({size}); a cache keeps the "
                         "tokens of an unfinished group in full precision")
    return dim % len(x_shape)


def _grouped(x: torch.Tensor, group_size: int, dim: int) -> torch.Tensor:
    """``x`` with ``dim`` moved last and split into [..., n_groups, group_size]."""
    moved = x.movedim(dim, -1)
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // group_size, group_size)


def quantize_groups(x: torch.Tensor, bits: int, group_size: int, dim: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric min-max quantization in groups of ``group_size`` consecutive elements along ``dim`` (KIVI).

    For each group: ``minimum = min(x)``, ``scale = (max(x) - minimum) / (2**bits - 1)`` and
    ``codes = round((x - minimum) / scale)`` (round half to even), in float32, clamped to ``[0, 2**bits - 1]``;
    a constant group (``scale = 0``) gets codes 0. Dequantized, ``codes * scale + minimum`` is within ``scale / 2``
    of ``x``. For a cache ``[B, heads, tokens, head_dim]``: ``dim=-2`` gives one scale per channel over each group
    of tokens (KIVI's keys), ``dim=-1`` one per token over each group of channels (KIVI's values).

    Args:
        x: float tensor, at least 1-D, finite, not empty.
        bits: 1 to 8.
        group_size: elements per group along ``dim``; must divide ``x.shape[dim]``.
        dim: the axis the groups run along (negative allowed).

    Returns:
        ``(codes, scale, minimum)``: ``codes`` uint8 with ``x``'s shape; ``scale`` and ``minimum`` float32 with
        ``x``'s shape except ``x.shape[dim] // group_size`` along ``dim``; all on ``x``'s device.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError("x must have at least 1 dimension, got a 0-d tensor")
    d = _check_group_args(tuple(x.shape), bits, group_size, dim)
    groups = _grouped(x.float(), group_size, d)
    minimum = groups.amin(dim=-1, keepdim=True)
    scale = (groups.amax(dim=-1, keepdim=True) - minimum) / (2 ** bits - 1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.where(scale > 0, torch.round((groups - minimum) / safe), torch.zeros_like(groups))
    codes = codes.clamp(0, 2 ** bits - 1).to(torch.uint8)
    shape = x.movedim(d, -1).shape
    codes = codes.reshape(shape).movedim(-1, d)
    return codes, scale.squeeze(-1).movedim(-1, d), minimum.squeeze(-1).movedim(-1, d)


def dequantize_groups(codes: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor, group_size: int,
                      dim: int) -> torch.Tensor:
    """``codes * scale + minimum``, each group's statistics repeated over its ``group_size`` elements.

    Args:
        codes: uint8, from ``quantize_groups``.
        scale, minimum: float (float32 or float16), ``codes``' shape with ``codes.shape[dim] // group_size``
            along ``dim``.
        group_size: elements per group along ``dim``.
        dim: the axis of the groups.

    Returns:
        float32 tensor with ``codes``' shape.
    """
    check_tensor(codes, "codes", dtypes=(torch.uint8,))
    d = _check_group_args(tuple(codes.shape), 8, group_size, dim)
    expected = list(codes.shape)
    expected[d] //= group_size
    for name, stat in (("scale", scale), ("minimum", minimum)):
        check_tensor(stat, name, dtypes=FLOAT_DTYPES)
        if list(stat.shape) != expected:
            raise ValueError(f"{name} must have shape {tuple(expected)} (codes' with dim {dim} divided by "
                             f"group_size), got {tuple(stat.shape)}")
    return (codes.float() * scale.float().repeat_interleave(group_size, dim=d)
            + minimum.float().repeat_interleave(group_size, dim=d))


# ----------------------------------------------------------------------------------------------
# caches


class _Store:
    """One tensor of one block's cache. ``view`` is what the attention reads: every cached token, float32. The
    newest tokens (``pending``) are there in full precision, as the forward pass that computed them attends with
    them; the next ``append`` (or ``finish``) replaces them by what the cache stores (rounded, quantized), which is
    what every later token reads."""

    def __init__(self):
        self.view, self.pending = None, 0

    @property
    def shape(self) -> torch.Size:
        return self.view.shape

    def append(self, x: torch.Tensor) -> None:
        self.finish()
        self.view = x.float() if self.view is None else torch.cat([self.view, x.float()], dim=2)
        self.pending = x.shape[2]

    def finish(self) -> None:
        if self.pending:
            self._store(self.view.shape[2] - self.pending)
            self.pending = 0

    def _store(self, start: int) -> None:
        """Store tokens ``start ..`` of the view (the pending ones), writing back what the cache keeps of them."""
        raise NotImplementedError


class _FloatStore(_Store):
    """Every token in a float dtype."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def _store(self, start: int) -> None:
        self.view[:, :, start:] = self.view[:, :, start:].to(self.dtype).float()

    def nbytes(self) -> int:
        return 0 if self.view is None else self.view.numel() * torch.empty((), dtype=self.dtype).element_size()


class _Int8Store(_Store):
    """Every token's vector (per head) as int8 codes and a float32 absmax: ``kernels.quantize_rows_int8``'s rows."""

    def __init__(self):
        super().__init__()
        self.stored = 0

    def _store(self, start: int) -> None:
        from .kernels import dequantize_rows_int8, quantize_rows_int8

        new = self.view[:, :, start:]
        q, absmax = quantize_rows_int8(new.reshape(-1, new.shape[-1]), backend="torch")
        self.stored += q.numel() + 4 * absmax.numel()
        self.view[:, :, start:] = dequantize_rows_int8(q, absmax).reshape(new.shape)

    def nbytes(self) -> int:
        return self.stored


class _GroupStore(_Store):
    """KIVI's store for one tensor: quantized chunks (codes, float16 scale and minimum) plus recent tokens in
    float16; the recent tokens are quantized together, a chunk of ``max(residual, group_size)`` tokens, when there
    are that many, whatever the axis."""

    def __init__(self, axis: str, bits: int, group_size: int, residual: int):
        super().__init__()
        self.axis, self.bits, self.group_size, self.residual = axis, bits, group_size, residual
        self.chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.recent = 0  # how many of the last stored tokens are in float16

    def _store(self, start: int) -> None:
        self.view[:, :, start:] = self.view[:, :, start:].half().float()
        n = self.recent + self.view.shape[2] - start
        keep = n % max(self.residual, self.group_size)
        if n > keep:  # quantize the oldest recent tokens, whole chunks, in place in the view
            first, stop = self.view.shape[2] - n, self.view.shape[2] - keep
            dim = -2 if self.axis == "channel" else -1
            codes, scale, minimum = quantize_groups(self.view[:, :, first:stop], self.bits, self.group_size, dim)
            scale, minimum = scale.half(), minimum.half()
            self.chunks.append((codes, scale, minimum))
            self.view[:, :, first:stop] = dequantize_groups(codes, scale, minimum, self.group_size, dim)
        self.recent = keep

    def nbytes(self) -> int:
        stored = sum(math.ceil(c.numel() * self.bits / 8) + _STAT_BYTES * (s.numel() + m.numel())
                     for c, s, m in self.chunks)
        return stored + (0 if self.view is None else self.recent * self.view[:, :, :1].numel() * 2)


class KVCache:
    """A KV cache in a float dtype: per block, the keys and values of every token run so far.

    ``update(layer, k, v)`` appends a step's keys and values ``[B, num_kv_heads, T, head_dim]`` to block
    ``layer``'s cache and returns everything it holds, as the attention reads it: the earlier tokens as stored, the
    new ones in full precision (the forward pass that computed them attends with them, as KIVI's prefill and decoding
    steps do); from the next update on, they too are read as stored. The quantizing caches (``Int8KVCache``,
    ``QuantizedKVCache``) keep this interface and store less.

    Args:
        dtype: what the cache stores: float32 (the model's own, default) or float16; it returns the keys and values
            in the dtype they came in.
    """

    def __init__(self, dtype: torch.dtype = torch.float32):
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype must be one of {[str(d) for d in FLOAT_DTYPES]}, got {dtype!r}")
        self.dtype = dtype
        self.keys: list = []
        self.values: list = []
        self.num_tokens = 0

    def _new_store(self, kind: str):
        return _FloatStore(self.dtype)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append block ``layer``'s new keys and values; return all it holds.

        Args:
            layer: the block, ``0 <= layer <= number of blocks seen so far`` (blocks are filled in order).
            k, v: ``[B, num_kv_heads, T, head_dim]``, the new tokens' keys (after RoPE) and values.

        Returns:
            ``(keys, values)``: ``[B, num_kv_heads, tokens so far, head_dim]`` in ``k``'s dtype.
        """
        check_int(layer, "layer", low=0, high=len(self.keys))
        check_tensor(k, "k", dtypes=FLOAT_DTYPES, ndim=4)
        check_tensor(v, "v", dtypes=FLOAT_DTYPES, ndim=4)
        if k.shape != v.shape:
            raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
        if self.keys and (k.shape[:2] != self.keys[0].shape[:2] or k.shape[3] != self.keys[0].shape[3]):
            raise ValueError(f"k must be [B, num_kv_heads, T, head_dim] with the B, heads and head_dim of the "
                             f"cached keys {tuple(self.keys[0].shape)}, got {tuple(k.shape)}")
        return self._update(layer, k, v)

    def _update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer == len(self.keys):
            self.keys.append(self._new_store("keys"))
            self.values.append(self._new_store("values"))
        self.keys[layer].append(k)
        self.values[layer].append(v)
        if layer == 0:
            self.num_tokens += k.shape[2]
        return self.keys[layer].view.to(k.dtype), self.values[layer].view.to(v.dtype)

    def _finish(self) -> None:
        for store in (*self.keys, *self.values):
            store.finish()

    def contents(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per block, the ``(keys, values)`` the next token will read (as stored: rounded or quantized), float32
        ``[B, num_kv_heads, tokens, head_dim]``."""
        self._finish()
        return [(k.view.clone(), v.view.clone()) for k, v in zip(self.keys, self.values)]

    def nbytes(self) -> int:
        """Bytes the cache holds, from its layout (codes packed ``bits / 8`` bytes each, statistics and
        full-precision tokens at their dtype's size)."""
        self._finish()
        return sum(k.nbytes() + v.nbytes() for k, v in zip(self.keys, self.values))

    def bytes_per_token(self, num_layers: int, num_kv_heads: int, head_dim: int) -> float:
        """Bytes one more token adds, averaged over a long context (recent full-precision tokens left out).

        Args:
            num_layers, num_kv_heads, head_dim: the model's shape (``config.num_hidden_layers``, ...).

        Returns:
            ``2 * num_layers * num_kv_heads`` times the bytes of one head's key (or value) vector.
        """
        for value, name in ((num_layers, "num_layers"), (num_kv_heads, "num_kv_heads"), (head_dim, "head_dim")):
            check_int(value, name, low=1)
        return 2 * num_layers * num_kv_heads * self._vector_bytes(head_dim)

    def _vector_bytes(self, head_dim: int) -> float:
        return head_dim * torch.empty((), dtype=self.dtype).element_size()


class Int8KVCache(KVCache):
    """Keys and values as absmax int8 per token and head: each ``head_dim`` vector is a row of
    ``kernels.quantize_rows_int8`` (int8 codes, one float32 absmax); no full-precision tokens."""

    def __init__(self):
        super().__init__(torch.float32)

    def _new_store(self, kind: str):
        return _Int8Store()

    def _vector_bytes(self, head_dim: int) -> float:
        return head_dim + 4


class QuantizedKVCache(KVCache):
    """KIVI's cache: keys per channel, values per token, ``bits``-bit codes in groups, recent tokens in float16.

    Args:
        bits: 1 to 8 (KIVI: 2 or 4).
        group_size: tokens per group for a tensor quantized per channel, channels per group for one quantized per
            token (must divide ``head_dim``); KIVI's released example uses 32.
        residual: recent tokens kept in float16, a multiple of ``group_size`` (0 allowed); KIVI's example uses 32.
        key_axis, value_axis: ``"channel"`` or ``"token"`` (``AXES``); KIVI's choice is the default, the other
            three pairs are there to measure why.
    """

    def __init__(self, bits: int = 4, group_size: int = 32, residual: int = 32, key_axis: str = "channel",
                 value_axis: str = "token"):
        super().__init__(torch.float16)
        check_int(bits, "bits", low=1, high=8)
        check_int(group_size, "group_size", low=1)
        check_int(residual, "residual", low=0)
        if residual % group_size:
            raise ValueError(f"residual={residual} must be a multiple of group_size={group_size}")
        for value, name in ((key_axis, "key_axis"), (value_axis, "value_axis")):
            if value not in AXES:
                raise ValueError(f"{name} must be one of {AXES}, got {value!r}")
        self.bits, self.group_size, self.residual = bits, group_size, residual
        self.key_axis, self.value_axis = key_axis, value_axis

    def _new_store(self, kind: str):
        axis = self.key_axis if kind == "keys" else self.value_axis
        return _GroupStore(axis, self.bits, self.group_size, self.residual)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if "token" in (self.key_axis, self.value_axis) and k.dim() == 4 and k.shape[-1] % self.group_size:
            raise ValueError(f"group_size={self.group_size} must divide head_dim={k.shape[-1]} for a tensor "
                             "quantized per token")
        return super().update(layer, k, v)

    def _vector_bytes(self, head_dim: int) -> float:
        # codes, plus (scale, minimum) in float16 per group: per channel every group_size tokens, or per token
        # every group_size channels; either way 2 statistics per group_size numbers
        return head_dim * self.bits / 8 + 2 * _STAT_BYTES * head_dim / self.group_size

    def __repr__(self) -> str:
        return (f"QuantizedKVCache(bits={self.bits}, group_size={self.group_size}, residual={self.residual}, "
                f"key_axis={self.key_axis!r}, value_axis={self.value_axis!r})")


# ----------------------------------------------------------------------------------------------
# measuring a cache against the float32 one


def _check_caches(caches) -> dict:
    if not isinstance(caches, dict) or not caches:
        raise TypeError("caches must be a non-empty dict {name: a function that returns a new, empty cache}")
    for name, make in caches.items():
        if not isinstance(name, str) or not callable(make):
            raise TypeError(f"caches must map names (str) to functions that return a new cache, got {name!r}: "
                            f"{type(make).__name__}")
    return caches


def _bytes_per_token(cache: KVCache, model) -> float:
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return cache.bytes_per_token(c.num_hidden_layers, c.num_key_value_heads, head_dim)


def compare_decoding(model, input_ids: torch.Tensor, caches: dict, prefill: int) -> list[dict]:
    """Teacher-forced decoding of the same tokens through several caches, each measured against a float32 cache.

    Every sequence is prefilled with its first ``prefill`` tokens, then fed its own next tokens one per step
    (``decode_logits``); the predictions of the ``T - prefill`` fed tokens are scored.

    Args:
        model: a Llama-architecture ``transformers`` causal LM.
        input_ids: int64 ``[B, T]``, ``B`` stretches of text.
        caches: ``{name: make}``, ``make()`` returning a new empty cache (``KVCache``, ``Int8KVCache``,
            ``QuantizedKVCache``).
        prefill: tokens run at once first, ``1 <= prefill < T``.

    Returns:
        One dict per cache, in order, after one for the float32 cache itself (``name`` "fp32"): ``name``;
        ``bytes/token`` (``bytes_per_token`` at the model's shape);
        ``perplexity`` on the fed tokens; ``KL vs fp32`` (mean over positions of KL(p_fp32 || p_cache), in nats);
        ``greedy agreement`` (share of positions whose most likely next token is the float32 cache's).
    """
    _check_caches(caches)
    rows, ref_logp = [], None
    for name, make in {"fp32": KVCache, **caches}.items():
        cache = make()
        logits = decode_logits(model, input_ids, cache, prefill)
        logp = torch.log_softmax(logits, dim=-1)
        if ref_logp is None:
            reference, ref_logp, targets = logits, logp, input_ids[:, prefill:]
        nll = -logp.gather(-1, targets[..., None]).mean()
        kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()
        rows.append({"name": name, "bytes/token": _bytes_per_token(cache, model),
                     "perplexity": float(nll.exp()), "KL vs fp32": float(kl),
                     "greedy agreement": float((logits.argmax(-1) == reference.argmax(-1)).float().mean())})
    return rows


def greedy_match(model, input_ids: torch.Tensor, caches: dict, max_new_tokens: int) -> list[dict]:
    """Free-running greedy generation through several caches, compared with the float32 cache's tokens.

    Args:
        model: a Llama-architecture ``transformers`` causal LM.
        input_ids: int64 ``[B, T]`` prompts of equal length.
        caches: ``{name: make}``, ``make()`` returning a new empty cache.
        max_new_tokens: tokens generated per prompt, ``>= 1``.

    Returns:
        One dict per cache: ``name``; ``same tokens`` (share of the generated tokens equal to the float32 cache's
        at the same position); ``first difference`` (mean over prompts of the number of tokens generated before the
        first one that differs, ``max_new_tokens`` when none does).
    """
    _check_caches(caches)
    check_int(max_new_tokens, "max_new_tokens", low=1)
    reference = generate(model, input_ids, max_new_tokens, KVCache())
    t = input_ids.shape[1]
    reference = reference[:, t:]
    rows = []
    for name, make in caches.items():
        same = generate(model, input_ids, max_new_tokens, make())[:, t:] == reference
        first = torch.where(same.all(dim=1), max_new_tokens, (~same).int().argmax(dim=1))
        rows.append({"name": name, "same tokens": float(same.float().mean()),
                     "first difference": float(first.float().mean())})
    return rows
