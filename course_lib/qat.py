"""Notebook 04: fake quantization with a straight-through estimator, static PTQ and QAT.

- :class:`FakeQuantizeSTE` / :func:`fake_quantize_ste`: ``affine.fake_quantize`` as a
  ``torch.autograd.Function`` whose backward is PyTorch's *clipped* straight-through estimator:
  the gradient passes unchanged where the input's code lies inside ``[qmin, qmax]`` and is 0 where
  it was clipped (``torch.fake_quantize_per_tensor_affine`` computes the same mask).
- :class:`LSQFakeQuantize` / :func:`lsq_fake_quantize`: fake quantization with a **learned step size**
  (LSQ, Esser et al., ICLR 2020): no zero point, the code range ``[qmin, qmax]`` with ``qmin <= 0 < qmax``,
  the step ``s`` a tensor that training updates (one per tensor or one per channel, broadcast to ``x``).
  With ``v = x / s``: forward ``clamp(round(v), qmin, qmax) * s``; backward the paper's gradients,
  ``d x_hat / d x = 1`` where ``qmin < v < qmax`` and 0 elsewhere (the straight-through estimator,
  clipped on the *unrounded* ``v`` as in the paper, where :class:`FakeQuantizeSTE` follows PyTorch and clips
  on the rounded code), and ``d x_hat / d s = round(v) - v`` inside, ``qmin`` or ``qmax`` outside, summed
  over the elements that share a step and multiplied by the gradient scale ``g = 1 / sqrt(N * qmax)``
  (``N`` elements per step). ``v`` is a true division, not PyTorch's float32 reciprocal: the two rounding
  rules differ only where ``x / s`` lies within an ulp of a rounding tie.
- :class:`DigitsMLP`: the small classifier of scikit-learn's 8x8 digits (64 -> 64 -> 64 -> 10, ReLU),
  trained in a few seconds on a CPU by :func:`train_classifier`.
- :class:`QuantLinear` and :func:`quantize_model`: static post-training quantization (simulated with
  fake quantization): every ``nn.Linear`` quantizes its input activations with a range chosen by an
  observer during calibration, and its weights with a range chosen by the same rule on the weight.
- :func:`qat_finetune`: quantization-aware training of such a model: the same fake quantization
  in the forward pass, the STE in the backward pass, the weight ranges recomputed every epoch by the
  observer's rule; with ``learn_steps=True`` the ranges are learned instead: every ``QuantLinear``
  switches to LSQ, its weight and activation steps starting from the calibrated ones (the paper's
  gradient scale: ``N`` = the weight's size for weights, the layer's input features for activations).
"""

from __future__ import annotations

import copy
import math
import numbers

import torch
from torch import nn

from . import affine
from .observers import OBSERVERS, Observer, make_observer
from .training import train_epochs
from .validation import FLOAT_DTYPES, check_bits, check_int, check_module, check_same_device, check_tensor

__all__ = [
    "FakeQuantizeSTE",
    "fake_quantize_ste",
    "LSQFakeQuantize",
    "lsq_fake_quantize",
    "DigitsMLP",
    "train_classifier",
    "QuantLinear",
    "quantize_model",
    "calibrate",
    "qat_finetune",
]


# ----------------------------------------------------------------------------------------------
# fake quantization with a clipped straight-through estimator


class FakeQuantizeSTE(torch.autograd.Function):
    """Forward: ``affine.fake_quantize(x, scale, zero_point, qmin, qmax)``.
    Backward: ``grad_x = grad_out * mask`` with ``mask = qmin <= round(x / scale) + zero_point <= qmax``
    (the code before clamping), and no gradient for the other arguments."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        out = affine.fake_quantize(x, scale, zero_point, qmin, qmax)  # also validates the arguments
        inv_scale = 1.0 / torch.as_tensor(scale, dtype=torch.float32, device=x.device)  # float32, as PyTorch
        codes = torch.round(x.to(torch.float32) * inv_scale) + torch.as_tensor(zero_point, device=x.device)
        ctx.save_for_backward((codes >= qmin) & (codes <= qmax))  # the code before clamping
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (mask,) = ctx.saved_tensors
        return grad_output * mask, None, None, None, None


def fake_quantize_ste(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    """Fake quantization that training can differentiate: the clipped straight-through estimator.

    Args:
        x: float tensor, any shape, not empty, finite (it may require grad).
        scale: positive float (Python number or one-element float tensor; no gradient flows to it).
        zero_point: integer (Python int or one-element integer tensor) in ``[qmin, qmax]``.
        qmin, qmax: the code range, ``qmin < qmax``.

    Returns:
        ``affine.fake_quantize(x, ...)`` in ``x``'s dtype and shape; its gradient with respect to ``x``
        is the incoming gradient where ``qmin <= round(x / scale) + zero_point <= qmax`` and 0 elsewhere.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)  # the forward's affine.fake_quantize checks the rest
    return FakeQuantizeSTE.apply(x, scale, zero_point, qmin, qmax)


# ----------------------------------------------------------------------------------------------
# learned step size quantization (LSQ)


class LSQFakeQuantize(torch.autograd.Function):
    """Forward: ``clamp(round(x / step), qmin, qmax) * step`` in ``x``'s dtype.
    Backward (Esser et al. 2020, with ``v = x / step``): ``grad_x = grad_out * [qmin < v < qmax]``;
    ``grad_step = grad_scale * sum(grad_out * (clamp(round(v), qmin, qmax) - v * [qmin < v < qmax]))``,
    summed over the elements that share a step (``step``'s shape), in ``step``'s dtype; no gradient for
    ``qmin``, ``qmax``, ``grad_scale``."""

    @staticmethod
    def forward(ctx, x, step, qmin, qmax, grad_scale):
        dtype = torch.promote_types(torch.promote_types(x.dtype, step.dtype), torch.float32)
        v = x.to(dtype) / step.to(dtype)
        codes = torch.round(v).clamp(qmin, qmax)
        ctx.save_for_backward(v, codes)
        ctx.qrange, ctx.grad_scale, ctx.step_shape, ctx.step_dtype = (qmin, qmax), grad_scale, step.shape, step.dtype
        return (codes * step.to(dtype)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        v, codes = ctx.saved_tensors
        qmin, qmax = ctx.qrange
        inside = (v > qmin) & (v < qmax)
        grad_x = grad_output * inside
        d_step = codes - v * inside  # round(v) - v inside; qmin or qmax (the clamped code) outside
        grad_step = (grad_output.to(v.dtype) * d_step).sum_to_size(ctx.step_shape) * ctx.grad_scale
        return grad_x, grad_step.to(ctx.step_dtype), None, None, None


def lsq_fake_quantize(x: torch.Tensor, step: torch.Tensor, qmin: int, qmax: int,
                      grad_scale: float | None = None) -> torch.Tensor:
    """Fake quantization with a learnable step size (LSQ): the step receives a gradient.

    Args:
        x: float tensor, any shape, not empty, finite (it may require grad).
        step: positive float tensor that broadcasts to ``x``'s shape without changing it: 0-dim (one step per
            tensor) or e.g. ``[C, 1]`` for a ``[C, K]`` weight (one step per output channel); it may require grad.
        qmin, qmax: the integer code range, ``qmin <= 0 < qmax`` (no zero point: 0 is always a code).
        grad_scale: ``g``, the factor on the step's gradient; ``None`` gives the paper's ``1 / sqrt(N * qmax)``
            with ``N = x.numel() / step.numel()``, the number of elements that share one step.

    Returns:
        ``clamp(round(x / step), qmin, qmax) * step`` in ``x``'s dtype and shape; backward as
        :class:`LSQFakeQuantize` states (the gradient of ``step`` has ``step``'s shape).
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    check_tensor(step, "step", dtypes=FLOAT_DTYPES)
    if not bool((step > 0).all()):
        raise ValueError("step must be positive everywhere")
    check_same_device(("x", x), ("step", step))
    if step.dim() > x.dim() or any(s not in (1, n) for s, n in zip(reversed(step.shape), reversed(x.shape))):
        raise ValueError(f"step must broadcast to x's shape {tuple(x.shape)}, got shape {tuple(step.shape)}")
    check_int(qmin, "qmin", high=0)
    check_int(qmax, "qmax", low=1)
    if grad_scale is None:
        grad_scale = 1.0 / math.sqrt(x.numel() // step.numel() * qmax)
    elif (isinstance(grad_scale, bool) or not isinstance(grad_scale, numbers.Real)
          or not math.isfinite(grad_scale) or grad_scale <= 0):
        raise ValueError(f"grad_scale must be a positive finite number or None, got {grad_scale!r}")
    return LSQFakeQuantize.apply(x, step, qmin, qmax, float(grad_scale))


# ----------------------------------------------------------------------------------------------
# the digits classifier


class DigitsMLP(nn.Module):
    """64 -> hidden -> hidden -> 10 with ReLU: a classifier of 8x8 digits (inputs ``[N, 64]`` in [0, 1])."""

    def __init__(self, hidden: int = 64, seed: int = 0):
        super().__init__()
        check_int(hidden, "hidden", low=1)
        check_int(seed, "seed")
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.fc1 = nn.Linear(64, hidden)
            self.fc2 = nn.Linear(hidden, hidden)
            self.fc3 = nn.Linear(hidden, 10)
        finally:
            torch.random.set_rng_state(gen_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def train_classifier(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int = 30, lr: float = 1e-2,
                     batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0, progress: bool = True,
                     desc: str = "training", on_epoch_start=None) -> list[float]:
    """Train ``model`` in place with Adam and cross-entropy on ``(X, y)``, shuffled mini-batches.

    Args:
        model: maps ``[B, 64]`` to logits ``[B, 10]``.
        X: float inputs ``[N, ...]``; y: int64 labels ``[N]`` (on the model's device or CPU).
        epochs, batch_size: >= 1. lr: Adam's learning rate (> 0). weight_decay: >= 0.
        seed: seed of the shuffling. progress: show a tqdm progress bar over the epochs.
        on_epoch_start: optional callable ``f(epoch)`` run before each epoch.

    Returns:
        The mean training loss of each epoch.
    """
    check_module(model, "model")
    check_tensor(X, "X", dtypes=FLOAT_DTYPES)
    check_tensor(y, "y", dtypes=(torch.int64,), ndim=1)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X and y must have the same number of rows, got {X.shape[0]} and {y.shape[0]}")
    check_int(epochs, "epochs", low=1)
    check_int(batch_size, "batch_size", low=1)
    check_int(seed, "seed")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    device = next(model.parameters()).device
    X, y = X.to(device), y.to(device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # A network this small trains fastest on one thread: with several, each tiny op pays for
        # synchronizing the threads (measured 20x slower with 2 threads on a 2-core machine).
        torch.set_num_threads(1)
    try:
        return train_epochs(model, X, y, epochs, lr, batch_size, seed=seed, weight_decay=weight_decay,
                            progress=progress, desc=desc, on_epoch_start=on_epoch_start)
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# static PTQ and QAT


class QuantLinear(nn.Module):
    """An ``nn.Linear`` that fake-quantizes its input activations and its weights.

    - Activations: an asymmetric ``bits``-bit grid (unsigned codes); its range comes from an
      observer (``observer`` names a rule of ``course_lib.observers.OBSERVERS``) during calibration
      and is then frozen (static quantization).
    - Weights: a symmetric ``bits``-bit grid (signed codes), per tensor; its range comes from the same
      rule applied to the weight itself, recomputed whenever the weight may have changed (in training).
    - Bias: kept in float (deployed int8 kernels keep it in int32 at scale ``s_x * s_w``: no loss here).

    Modes: ``"float"`` (the plain layer), ``"calibrate"`` (float, and the observer records the inputs),
    ``"quantize"`` (fake quantization; differentiable through ``fake_quantize_ste``), ``"lsq"`` (set by
    :meth:`learn_steps`: the same grids with learnable steps ``act_step`` and ``w_step``, through
    ``lsq_fake_quantize``).
    """

    def __init__(self, linear: nn.Linear, bits: int, observer: str = "min-max", weight_observer: str | None = None):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        check_bits(bits, "bits", low=2, high=16)
        if observer not in OBSERVERS:
            raise ValueError(f"observer must be one of {sorted(OBSERVERS)}, got {observer!r}")
        weight_observer = observer if weight_observer is None else weight_observer
        if weight_observer not in OBSERVERS:
            raise ValueError(f"weight_observer must be one of {sorted(OBSERVERS)}, got {weight_observer!r}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        self.bits = bits
        self.observer_name, self.weight_observer_name = observer, weight_observer
        self.act_observer: Observer = make_observer(observer, bits=bits, symmetric=False)
        self.act_qmin, self.act_qmax = self.act_observer.qmin, self.act_observer.qmax
        self.w_qmin, self.w_qmax = affine.qrange(bits, signed=True)
        self.register_buffer("act_scale", torch.ones((), device=self.weight.device))
        self.register_buffer("act_zero_point", torch.zeros((), dtype=torch.int32, device=self.weight.device))
        self.register_parameter("act_step", None)  # LSQ's learnable steps (learn_steps)
        self.register_parameter("w_step", None)
        self.mode = "float"
        self.freeze_weight_range = False  # QAT: keep the weight range between explicit refreshes
        self._w_cache = None  # (weight version, scale, zero point)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"observer={self.observer_name!r}, mode={self.mode!r}")

    def weight_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point of the weight (the weight observer's rule on the current weight)."""
        version = (self.weight._version, self.weight.data_ptr())
        stale = self._w_cache is None or (self._w_cache[0] != version and not self.freeze_weight_range)
        if stale:
            obs = make_observer(self.weight_observer_name, bits=self.bits, symmetric=True)
            obs.observe(self.weight.detach())
            self._w_cache = (version, *obs.qparams())
        return self._w_cache[1], self._w_cache[2]

    def refresh_weight_range(self) -> None:
        """Recompute the weight range from the current weight at the next forward."""
        self._w_cache = None

    def freeze_activation_range(self) -> None:
        """Take the activation scale and zero point from the observer (end of calibration)."""
        scale, zp = self.act_observer.qparams()
        self.act_scale.copy_(scale)
        self.act_zero_point.copy_(zp)

    def learn_steps(self) -> None:
        """Switch a calibrated layer to LSQ: the activation step starts at the calibrated scale, the weight
        step at the weight rule's scale for the current weight; both become parameters (create the optimizer
        after this call). The activation zero point stays fixed: the code range shifts by it."""
        if self.mode not in ("quantize", "lsq"):
            raise ValueError(f"learn_steps needs a calibrated layer (mode 'quantize'), got mode {self.mode!r}")
        if self.mode == "lsq":
            return
        z = int(self.act_zero_point)
        if not self.act_qmin - z <= 0 < self.act_qmax - z:
            raise ValueError(f"the activation zero point {z} must lie in [qmin, qmax) = [{self.act_qmin}, {self.act_qmax})")
        w_scale, _ = self.weight_qparams()
        self.act_step = nn.Parameter(self.act_scale.detach().clone().float())
        self.w_step = nn.Parameter(torch.as_tensor(w_scale).detach().clone().float().reshape(()))
        self.mode = "lsq"

    def quantized_weight(self) -> torch.Tensor:
        if self.mode == "lsq":
            g = 1.0 / math.sqrt(self.weight.numel() * self.w_qmax)  # the paper's N_W: the weight's size
            return lsq_fake_quantize(self.weight, self.w_step, self.w_qmin, self.w_qmax, g)
        scale, zp = self.weight_qparams()
        return fake_quantize_ste(self.weight, scale, zp, self.w_qmin, self.w_qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "float":
            return nn.functional.linear(x, self.weight, self.bias)
        if self.mode == "calibrate":
            self.act_observer.observe(x)
            return nn.functional.linear(x, self.weight, self.bias)
        if self.mode == "quantize":
            xq = fake_quantize_ste(x, self.act_scale, self.act_zero_point, self.act_qmin, self.act_qmax)
            return nn.functional.linear(xq, self.quantized_weight(), self.bias)
        if self.mode == "lsq":
            z = int(self.act_zero_point)
            qmin, qmax = self.act_qmin - z, self.act_qmax - z  # (clamp(round(x/s) + z) - z) * s, z fixed
            g = 1.0 / math.sqrt(self.in_features * qmax)  # the paper's N_F: the layer's input features
            xq = lsq_fake_quantize(x, self.act_step, qmin, qmax, g)
            return nn.functional.linear(xq, self.quantized_weight(), self.bias)
        raise ValueError(f"mode must be 'float', 'calibrate', 'quantize' or 'lsq', got {self.mode!r}")


def _quant_layers(model: nn.Module) -> list[QuantLinear]:
    return [m for m in model.modules() if isinstance(m, QuantLinear)]


def calibrate(model: nn.Module, X: torch.Tensor, batch_size: int = 64) -> nn.Module:
    """Run calibration inputs ``X`` through ``model`` so its ``QuantLinear`` observers see them;
    then freeze the activation ranges and switch every ``QuantLinear`` to ``"quantize"``. Returns ``model``.

    Args:
        model: a ``quantize_model`` copy whose ``QuantLinear`` layers are observing.
        X: calibration inputs ``[N, in_features]``.
        batch_size: rows per forward pass.

    Returns:
        nn.Module: ``model`` itself, calibrated and quantizing.
    """
    check_module(model, "model")
    check_tensor(X, "X", dtypes=FLOAT_DTYPES)
    check_int(batch_size, "batch_size", low=1)
    layers = _quant_layers(model)
    if not layers:
        raise ValueError("model has no QuantLinear layers: build it with quantize_model")
    for layer in layers:
        layer.act_observer.reset()
        layer.mode = "calibrate"
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, X.shape[0], batch_size):
            model(X[start:start + batch_size].to(device))
    for layer in layers:
        layer.freeze_activation_range()
        layer.mode = "quantize"
    model.train(was_training)
    return model


def quantize_model(model: nn.Module, bits: int, observer: str = "min-max", X_calib: torch.Tensor | None = None,
                   weight_observer: str | None = None) -> nn.Module:
    """Static PTQ (simulated): a copy of ``model`` with every ``nn.Linear`` replaced by a ``QuantLinear``.

    Args:
        model: any module with ``nn.Linear`` layers (left unchanged).
        bits: 2 to 16, for weights and activations alike.
        observer: the range rule (a key of ``course_lib.observers.OBSERVERS``).
        X_calib: calibration inputs; when given, the copy is calibrated (``calibrate``) and ready.
        weight_observer: the weights' range rule (default: ``observer``).

    Returns:
        The quantized copy, in eval mode.
    """
    check_module(model, "model")
    check_bits(bits, "bits", low=2, high=16)
    qmodel = copy.deepcopy(model)

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                setattr(parent, name, QuantLinear(child, bits, observer, weight_observer))
            else:
                replace(child)

    replace(qmodel)
    if X_calib is not None:
        calibrate(qmodel, X_calib)
    return qmodel.eval()


def qat_finetune(qmodel: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int = 10, lr: float = 1e-3,
                 batch_size: int = 64, seed: int = 0, progress: bool = True, learn_steps: bool = False) -> list[float]:
    """Quantization-aware fine-tuning of a calibrated ``quantize_model`` copy, in place.

    The forward pass is the quantized model's (weights and activations fake-quantized, activation
    ranges as calibrated); the backward pass goes through the clipped STE. The weight ranges are
    recomputed from the current weights (with each layer's weight observer rule) at the start of every
    epoch and frozen in between, so an expensive rule (MSE search) costs one search per epoch, not
    one per step; the last ones stay frozen afterwards. With ``learn_steps=True`` the ranges are learned
    instead (LSQ, :meth:`QuantLinear.learn_steps`): the steps start at the calibrated ones and Adam updates
    them with the weights. Returns the mean loss of each epoch.

    Args:
        qmodel: a calibrated ``quantize_model`` copy, trained in place.
        X, y: training inputs ``[N, in_features]`` and int64 labels ``[N]``.
        epochs, lr, batch_size: Adam fine-tuning settings.
        seed: seed of the batch shuffling.
        progress: show a tqdm bar.
        learn_steps: learn the weight and activation steps (LSQ) instead of setting them by rule.

    Returns:
        list[float]: the mean training loss of each epoch.
    """
    check_module(qmodel, "qmodel")
    layers = _quant_layers(qmodel)
    if not layers:
        raise ValueError("qmodel has no QuantLinear layers: build it with quantize_model")
    if any(layer.mode not in ("quantize", "lsq") for layer in layers):
        raise ValueError("qmodel must be calibrated first (calibrate or quantize_model with X_calib)")
    if not isinstance(learn_steps, bool):
        raise TypeError(f"learn_steps must be a bool, got {type(learn_steps).__name__}")
    if learn_steps:
        for layer in layers:
            layer.learn_steps()
    def refresh(epoch):
        for layer in layers:
            layer.refresh_weight_range()

    for layer in layers:
        layer.freeze_weight_range = True
    return train_classifier(qmodel, X, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                            progress=progress, desc="QAT", on_epoch_start=refresh)
