"""Notebook 11: knowledge distillation, from a teacher's soft targets to a smaller or quantized student.

Knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural
Network", arXiv 1503.02531) trains a *student* to match the output distribution of a *teacher*:

- **soft targets:** both models' logits are divided by a temperature ``T > 0`` before the softmax,
  ``p = softmax(z / T)``; a higher ``T`` spreads the teacher's probability over the wrong classes,
  and how it spreads it (a 3 looks more like an 8 than like a 1) is what the student learns from;
- **soft-target loss:** ``T**2 * KL(p_teacher || p_student)``, averaged over the examples
  (``batchmean``). The gradient of the KL with respect to the student's logits is
  ``(p_student - p_teacher) / T`` and shrinks like ``1 / T**2`` for large ``T``; the ``T**2``
  factor keeps its size roughly constant when ``T`` changes (Hinton et al., section 2);
- **distillation loss:** ``alpha * soft-target loss + (1 - alpha) * cross-entropy(student, labels)``;
- **feature distillation** (FitNets, Romero et al. 2015, arXiv 1412.6550): the student's hidden
  state, mapped by a learned projection to the teacher's width, is pulled towards the teacher's
  hidden state with a mean squared error.

Teacher tensors are always detached: gradients reach only the student (and the projection).

Training helpers for the notebook: small digits MLPs (:func:`make_mlp`) whose linear layers can
fake-quantize their weights with a straight-through estimator (:class:`QuantLinear`, for QAT + KD),
:func:`train_classifier` with or without a teacher, a smaller sibling of the course LM
(:func:`make_student_lm`) and :func:`train_lm` with or without the course LM as teacher.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .granularity import fake_quantize_weight
from .training import progress_bar, train_steps
from .validation import FLOAT_DTYPES, check_int, check_module, check_tensor

__all__ = [
    "soft_target_loss",
    "distillation_loss",
    "feature_distillation_loss",
    "soft_targets",
    "soft_target_grad_norm",
    "QuantLinear",
    "make_mlp",
    "set_weight_bits",
    "mlp_hidden_and_logits",
    "train_classifier",
    "student_vs_distilled",
    "mean_std",
    "make_student_lm",
    "train_lm",
]


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_temperature(temperature) -> float:
    if isinstance(temperature, torch.Tensor) and temperature.numel() == 1:
        temperature = temperature.item()
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a positive number, got {type(temperature).__name__}")
    if not (math.isfinite(float(temperature)) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def _check_alpha(alpha) -> float:
    if isinstance(alpha, torch.Tensor) and alpha.numel() == 1:
        alpha = alpha.item()
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a number in [0, 1], got {type(alpha).__name__}")
    if not 0.0 <= float(alpha) <= 1.0:  # NaN fails this too
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return float(alpha)


def _check_logit_pair(student_logits, teacher_logits) -> None:
    check_tensor(student_logits, "student_logits", dtypes=FLOAT_DTYPES)
    check_tensor(teacher_logits, "teacher_logits", dtypes=FLOAT_DTYPES)
    if student_logits.dim() < 2:
        raise ValueError(f"student_logits must have shape [batch, ..., classes] (at least 2 dimensions), "
                         f"got shape {tuple(student_logits.shape)}")
    if teacher_logits.shape[-1] != student_logits.shape[-1]:
        raise ValueError(f"teacher_logits and student_logits must have the same number of classes (vocabulary "
                         f"size, last dimension), got {teacher_logits.shape[-1]} and {student_logits.shape[-1]}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits must have the same shape as student_logits (same batch), got "
                         f"{tuple(teacher_logits.shape)} and {tuple(student_logits.shape)}")
    if teacher_logits.device != student_logits.device:
        raise ValueError(f"teacher_logits is on {teacher_logits.device} but student_logits is on "
                         f"{student_logits.device}: move them to one device")


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64, otherwise float32 (fp16/bf16 logits are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


# ----------------------------------------------------------------------------------------------
# the three losses (the notebook's exercises)


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / temperature)`` over the last dimension (the teacher's soft targets).

    Args:
        logits: float tensor ``[..., classes]``, finite.
        temperature: ``T > 0``; 1 gives the ordinary softmax, larger values flatten it.

    Returns:
        Probabilities of ``logits``' shape, float32 (float64 for float64 logits).
    """
    check_tensor(logits, "logits", dtypes=FLOAT_DTYPES)
    t = _check_temperature(temperature)
    return torch.softmax(logits.to(_compute_dtype(logits)) / t, dim=-1)


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft-target loss: ``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, batchmean.

    With ``N`` the number of examples (every position but the last dimension: ``batch`` for a
    classifier, ``batch * tokens`` for a language model),

    ``loss = T**2 / N * sum_n sum_c p_t[n, c] * (log p_t[n, c] - log p_s[n, c])``,
    ``log p = log_softmax(logits / T)``.

    Args:
        student_logits: float ``[batch, ..., classes]``, finite; gradients flow back into it.
        teacher_logits: float, the same shape and device; detached (the teacher is not trained).
        temperature: ``T > 0``.

    Returns:
        A 0-dim tensor ``>= 0`` (0 when the logits are equal), float32 (float64 if an input is float64).

    Raises:
        ValueError: temperature not > 0; shapes, class counts or devices that differ; NaN or Inf logits.
    """
    _check_logit_pair(student_logits, teacher_logits)
    t = _check_temperature(temperature)
    dtype = _compute_dtype(student_logits, teacher_logits)
    classes = student_logits.shape[-1]
    log_p_s = F.log_softmax(student_logits.to(dtype).reshape(-1, classes) / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().to(dtype).reshape(-1, classes) / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1).mean()
    return kl * (t * t)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * soft_target_loss(student, teacher, T) + (1 - alpha) * cross_entropy(student, labels)``.

    The cross-entropy is the ordinary one (temperature 1), averaged over the same ``N`` examples.

    Args:
        student_logits: float ``[batch, ..., classes]``, finite.
        teacher_logits: float, the same shape and device (detached).
        labels: integer class indices of shape ``student_logits.shape[:-1]``, each in ``[0, classes)``.
        temperature: ``T > 0`` of the soft-target term.
        alpha: weight of the soft-target term in ``[0, 1]`` (1: teacher only, 0: labels only).

    Returns:
        A 0-dim tensor, float32 (float64 if a logit tensor is float64).

    Raises:
        ValueError: as :func:`soft_target_loss`; alpha outside [0, 1]; labels of the wrong shape or out of range.
        TypeError: float labels.
    """
    _check_logit_pair(student_logits, teacher_logits)
    t = _check_temperature(temperature)
    a = _check_alpha(alpha)
    check_tensor(labels, "labels")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must hold integer class indices, got dtype {str(labels.dtype).replace('torch.', '')}")
    if tuple(labels.shape) != tuple(student_logits.shape[:-1]):
        raise ValueError(f"labels must have shape {tuple(student_logits.shape[:-1])} (the logits' shape without the "
                         f"class dimension), got {tuple(labels.shape)}")
    classes = student_logits.shape[-1]
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= classes:
        raise ValueError(f"labels must lie in [0, {classes}) (the number of classes), got values in [{lo}, {hi}]")
    if labels.device != student_logits.device:
        raise ValueError(f"labels is on {labels.device} but student_logits is on {student_logits.device}")
    dtype = _compute_dtype(student_logits, teacher_logits)
    soft = soft_target_loss(student_logits, teacher_logits, t)
    hard = F.cross_entropy(student_logits.to(dtype).reshape(-1, classes), labels.reshape(-1).long())
    return a * soft + (1.0 - a) * hard


def feature_distillation_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                              projection: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Mean squared error between the projected student hidden state and the teacher's (FitNets' hint loss).

    ``loss = mean((projection(student_hidden) - teacher_hidden)**2)`` over every element.

    Args:
        student_hidden: float ``[..., d_student]``, finite.
        teacher_hidden: float ``[..., d_teacher]`` with the same leading dimensions (detached).
        projection: a module or function mapping ``[..., d_student]`` to ``[..., d_teacher]`` (usually
            a learned ``nn.Linear(d_student, d_teacher)``, trained with the student); None for the identity
            (then ``d_student`` must equal ``d_teacher``).

    Returns:
        A 0-dim tensor ``>= 0``, float32 (float64 if an input is float64).

    Raises:
        ValueError: leading dimensions that differ, a projection whose output does not have
            ``teacher_hidden``'s shape, NaN or Inf values.
        TypeError: a projection that is not callable.
    """
    check_tensor(student_hidden, "student_hidden", dtypes=FLOAT_DTYPES)
    check_tensor(teacher_hidden, "teacher_hidden", dtypes=FLOAT_DTYPES)
    if student_hidden.dim() < 1 or teacher_hidden.dim() != student_hidden.dim():
        raise ValueError(f"teacher_hidden must have as many dimensions as student_hidden, got shapes "
                         f"{tuple(teacher_hidden.shape)} and {tuple(student_hidden.shape)}")
    if tuple(teacher_hidden.shape[:-1]) != tuple(student_hidden.shape[:-1]):
        raise ValueError(f"student_hidden and teacher_hidden must share every dimension but the last (same batch and "
                         f"tokens), got {tuple(student_hidden.shape)} and {tuple(teacher_hidden.shape)}")
    if projection is None:
        if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
            raise ValueError(f"projection is None but the widths differ (student {student_hidden.shape[-1]}, teacher "
                             f"{teacher_hidden.shape[-1]}): pass a projection such as nn.Linear(d_student, d_teacher)")
        projected = student_hidden
    else:
        if not callable(projection):
            raise TypeError(f"projection must be a callable (e.g. an nn.Linear) or None, got {type(projection).__name__}")
        projected = projection(student_hidden)
        if not isinstance(projected, torch.Tensor) or tuple(projected.shape) != tuple(teacher_hidden.shape):
            got = tuple(projected.shape) if isinstance(projected, torch.Tensor) else type(projected).__name__
            raise ValueError(f"projection must map the student's hidden state to teacher_hidden's shape "
                             f"{tuple(teacher_hidden.shape)}, got {got}")
    dtype = _compute_dtype(projected, teacher_hidden)
    return (projected.to(dtype) - teacher_hidden.detach().to(dtype)).pow(2).mean()


def soft_target_grad_norm(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                          times_t_squared: bool = True) -> float:
    """Norm of the gradient of the soft-target loss with respect to the student's logits.

    ``times_t_squared=False`` drops the ``T**2`` factor (plain KL at temperature ``T``), to show that
    its gradient shrinks like ``1 / T**2`` while the scaled one stays roughly constant.

    Args:
        student_logits: ``[batch, classes]``.
        teacher_logits: same shape.
        temperature: softmax temperature T > 0.
        times_t_squared: multiply the loss by ``T**2`` (Hinton et al.).

    Returns:
        float: the L2 norm of the gradient.
    """
    t = _check_temperature(temperature)
    z = student_logits.detach().clone().requires_grad_(True)
    loss = soft_target_loss(z, teacher_logits, t)
    if not times_t_squared:
        loss = loss / (t * t)
    (grad,) = torch.autograd.grad(loss, z)
    return float(grad.double().norm())


# ----------------------------------------------------------------------------------------------
# quantized students: fake quantization with a straight-through estimator


def _ste_fake_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel RTN fake quantization whose gradient is the identity (STE).

    Forward: ``course_lib.granularity.fake_quantize_weight(w, bits, symmetric=True)``; backward:
    ``w + (fq(w) - w).detach()`` passes the gradient straight through to the latent float weight.
    """
    return w + (fake_quantize_weight(w, bits, symmetric=True) - w).detach()


class QuantLinear(torch.nn.Linear):
    """``nn.Linear`` whose weight is fake-quantized in the forward pass when ``bits`` is set.

    ``bits=None`` is an ordinary float layer; ``bits`` in 2..8 quantizes the weight symmetrically per
    output channel (RTN) in every forward pass and trains the float weight through a straight-through
    estimator: quantization-aware training (QAT). The bias stays float.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int | None = None):
        super().__init__(in_features, out_features, bias=bias)
        self.bits = bits

    @property
    def bits(self) -> int | None:
        return self._bits

    @bits.setter
    def bits(self, value: int | None) -> None:
        if value is not None:
            check_int(value, "bits", low=2, high=8)
        self._bits = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self._bits is None else _ste_fake_quantize(self.weight, self._bits)
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bits={self._bits}"


def make_mlp(widths: Sequence[int], in_features: int = 64, classes: int = 10, seed: int = 0,
             bits: int | None = None) -> torch.nn.Sequential:
    """A ``in_features -> widths... -> classes`` ReLU MLP of :class:`QuantLinear` layers.

    Args:
        widths: hidden widths, e.g. ``[256, 256]`` for a teacher, ``[16]`` for a student.
        in_features, classes: input size (64 pixels for digits) and number of classes.
        seed: initialization seed.
        bits: weight bits of every layer (None: float).

    Returns:
        torch.nn.Sequential: the MLP, float32, on the CPU.
    """
    widths = list(widths)
    for i, w in enumerate(widths):
        check_int(w, f"widths[{i}]", low=1)
    check_int(in_features, "in_features", low=1)
    check_int(classes, "classes", low=2)
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    d = in_features
    for w in widths:
        layers += [QuantLinear(d, w, bits=bits), torch.nn.ReLU()]
        d = w
    layers.append(QuantLinear(d, classes, bits=bits))
    return torch.nn.Sequential(*layers)


def set_weight_bits(model: torch.nn.Module, bits: int | None) -> torch.nn.Module:
    """Set ``bits`` of every :class:`QuantLinear` in ``model`` (None: float); returns the model.

    Args:
        model: changed in place.
        bits: weight bits, or None for float.

    Returns:
        torch.nn.Module: ``model`` itself.
    """
    check_module(model, "model")
    if bits is not None:
        check_int(bits, "bits", low=2, high=8)
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.bits = bits
    return model


def mlp_hidden_and_logits(model: torch.nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hidden, logits)``: the last hidden layer's output (after its ReLU) and the logits of an MLP.

    Args:
        model: a :func:`make_mlp` MLP.
        x: inputs ``[batch, in_features]``.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``[batch, last width]`` and ``[batch, classes]``.
    """
    if not isinstance(model, torch.nn.Sequential) or len(model) < 2:
        raise TypeError("model must be an nn.Sequential MLP with at least one hidden layer (from make_mlp)")
    hidden = model[:-1](x)
    return hidden, model[-1](hidden)


def train_classifier(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor | None = None,
                     teacher: torch.nn.Module | None = None, temperature: float = 4.0, alpha: float = 0.9,
                     steps: int = 500, lr: float = 1e-2, batch_size: int = 64, seed: int = 0,
                     projection: torch.nn.Module | None = None, feature_weight: float = 0.0,
                     progress: bool = True, desc: str = "training") -> list[float]:
    """Train a classifier with AdamW (cosine schedule) on random mini-batches, with or without a teacher.

    - no teacher: cross-entropy on ``y``;
    - a teacher: :func:`distillation_loss` with ``temperature`` and ``alpha`` (``alpha=1`` needs no labels:
      pass ``y=None``); the teacher runs in eval mode under ``torch.no_grad``;
    - ``feature_weight > 0``: plus ``feature_weight *`` :func:`feature_distillation_loss` between the
      student's and the teacher's last hidden layers (both :func:`make_mlp` MLPs), through ``projection``
      (trained with the student).

    Args:
        model: the student, trained in place.
        X, y: inputs ``[N, features]`` and int64 labels ``[N]`` (y may be None when ``alpha=1``).
        teacher: the teacher, or None.
        temperature, alpha: :func:`distillation_loss` settings.
        steps, lr, batch_size: AdamW settings.
        seed: seed of the batch sampling.
        projection: maps the student's hidden layer to the teacher's (feature distillation).
        feature_weight: weight of the feature loss (0: off).
        progress, desc: tqdm bar and its label.

    Returns:
        The loss of every step (Python floats). The model is left in eval mode.
    """
    check_module(model, "model")
    check_int(steps, "steps", low=1)
    check_int(batch_size, "batch_size", low=1)
    check_tensor(X, "X", dtypes=FLOAT_DTYPES, ndim=2)
    if teacher is None or alpha < 1.0:
        if y is None:
            raise ValueError("y (labels) is required unless a teacher is given with alpha=1")
    if y is not None:
        check_tensor(y, "y", ndim=1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X and y must have the same number of rows, got {X.shape[0]} and {y.shape[0]}")
    if feature_weight and (teacher is None or projection is None):
        raise ValueError("feature_weight > 0 needs a teacher and a projection")
    device = next(model.parameters()).device
    X = X.to(device)
    y = y.to(device) if y is not None else None
    params = list(model.parameters()) + (list(projection.parameters()) if projection is not None else [])
    gen = torch.Generator().manual_seed(seed)
    if teacher is not None:
        teacher.eval()

    def loss_at(_step: int) -> torch.Tensor:
        idx = torch.randint(0, X.shape[0], (batch_size,), generator=gen).to(device)
        xb = X[idx]
        if teacher is None:
            return F.cross_entropy(model(xb), y[idx])
        with torch.no_grad():
            t_hidden, t_logits = mlp_hidden_and_logits(teacher, xb) if feature_weight else (None, teacher(xb))
        s_hidden, s_logits = mlp_hidden_and_logits(model, xb) if feature_weight else (None, model(xb))
        if y is None:
            loss = soft_target_loss(s_logits, t_logits, temperature)
        else:
            loss = distillation_loss(s_logits, t_logits, y[idx], temperature, alpha)
        if feature_weight:
            loss = loss + feature_weight * feature_distillation_loss(s_hidden, t_hidden, projection)
        return loss

    return train_steps(model, params, steps, lr, loss_at, progress, desc)


def student_vs_distilled(teacher: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, X_test: torch.Tensor,
                         y_test: torch.Tensor, widths: Sequence[int] = (16,), seeds: Sequence[int] = (0, 1, 2, 3),
                         n_train: int | None = None, progress: bool = True, **train_kwargs) -> list[dict]:
    """Train the same student alone and distilled, for several seeds; returns one row per seed.

    Each seed fixes the student's initialization, the mini-batch order and (when ``n_train`` is set) which
    ``n_train`` training images the student sees; both students of a seed share all three, so the
    difference between them is the teacher's alone.

    Args:
        teacher: the trained teacher.
        X, y: training inputs and labels.
        X_test, y_test: test inputs and labels.
        widths: the student's hidden widths.
        seeds: one pair of students per seed.
        n_train: train on this many images only (None: all).
        progress: show a tqdm bar.
        **train_kwargs: passed to :func:`train_classifier`.

    Returns:
        list of dicts ``{"seed", "alone", "distilled"}`` (test accuracies).
    """
    check_module(teacher, "teacher")
    from .evaluate import accuracy

    rows = []
    for seed in progress_bar(list(seeds), "seeds", progress):
        if n_train is None:
            Xs, ys = X, y
        else:
            check_int(n_train, "n_train", low=1, high=X.shape[0])
            idx = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(1000 + seed))[:n_train]
            Xs, ys = X[idx], y[idx]
        row = {"seed": seed}
        for name, t in (("alone", None), ("distilled", teacher)):
            student = make_mlp(widths, seed=seed).to(next(teacher.parameters()).device)
            train_classifier(student, Xs, ys, teacher=t, seed=seed, progress=False, **train_kwargs)
            row[name] = accuracy(student, X_test, y_test)
        rows.append(row)
    return rows


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value).

    Args:
        values: the numbers.

    Returns:
        tuple[float, float]: mean and standard deviation.
    """
    v = [float(x) for x in values]
    if not v:
        raise ValueError("values must not be empty")
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s


# ----------------------------------------------------------------------------------------------
# language models


def make_student_lm(vocab_size: int = 4096, hidden: int = 128, layers: int = 2, heads: int = 2,
                    intermediate: int = 192, max_positions: int = 512, seed: int = 0):
    """A smaller sibling of the course LM: a transformers ``LlamaForCausalLM`` with the same vocabulary.

    The course LM is hidden 256, intermediate 384, 4 blocks, 4 heads, vocabulary 4096, tied embedding;
    the default sibling halves the width and the depth (about 0.8M parameters, most of them the
    4096 x 128 embedding). Same tokenizer, so its logits line up with the teacher's token by token.

    Args:
        vocab_size, hidden, layers, heads, intermediate, max_positions: the Llama config's sizes.
        seed: initialization seed.

    Returns:
        LlamaForCausalLM: float32, on the CPU, in train mode.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    for name, v in (("vocab_size", vocab_size), ("hidden", hidden), ("layers", layers), ("heads", heads),
                    ("intermediate", intermediate), ("max_positions", max_positions)):
        check_int(v, name, low=1)
    if hidden % heads:
        raise ValueError(f"heads={heads} must divide hidden={hidden}")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=True,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(config)


def train_lm(model: torch.nn.Module, windows: torch.Tensor, teacher: torch.nn.Module | None = None,
             temperature: float = 1.0, alpha: float = 0.5, batch_size: int = 8, lr: float = 3e-3, seed: int = 0,
             progress: bool = True, desc: str = "training") -> list[float]:
    """One pass over token windows (``[n, seq_len]``, e.g. ``lm_quant.calibration_ids``), ``batch_size`` a step.

    Next-token cross-entropy alone, or with a teacher (same vocabulary) :func:`distillation_loss` on every
    position: ``alpha * T**2 KL(teacher || student) + (1 - alpha) * CE``. AdamW with a cosine schedule;
    the window order is shuffled with ``seed``. Returns the loss of every step; the model ends in eval mode.

    Args:
        model: the student, trained in place.
        windows: int64 token ids ``[n, seq_len]``.
        teacher: a causal LM with the same vocabulary, or None.
        temperature, alpha: :func:`distillation_loss` settings.
        batch_size, lr: AdamW settings.
        seed: seed of the shuffling.
        progress, desc: tqdm bar and its label.

    Returns:
        list[float]: the loss of every step.
    """
    check_module(model, "model")
    check_tensor(windows, "windows", ndim=2)
    if windows.is_floating_point():
        raise TypeError("windows must hold integer token ids")
    check_int(batch_size, "batch_size", low=1)
    device = next(model.parameters()).device
    if teacher is not None:
        v_s, v_t = model.get_input_embeddings().num_embeddings, teacher.get_input_embeddings().num_embeddings
        if v_s != v_t:
            raise ValueError(f"teacher and student must share a vocabulary, got {v_t} and {v_s} tokens")
        teacher.eval()
    order = torch.randperm(windows.shape[0], generator=torch.Generator().manual_seed(seed))
    steps = max(1, windows.shape[0] // batch_size)

    def loss_at(step: int) -> torch.Tensor:
        batch = windows[order[step * batch_size:(step + 1) * batch_size]].to(device)
        logits = model(input_ids=batch).logits[:, :-1]
        targets = batch[:, 1:]
        if teacher is None:
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        with torch.no_grad():
            t_logits = teacher(input_ids=batch).logits[:, :-1]
        return distillation_loss(logits, t_logits, targets, temperature, alpha)

    return train_steps(model, model.parameters(), steps, lr, loss_at, progress, desc)
