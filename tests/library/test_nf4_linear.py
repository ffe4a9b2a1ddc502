"""course_lib.kernels.NF4Linear and replace_linears_nf4: 4-bit inference through the public kernel functions.

The reference is independent of the kernels: the weight quantized and dequantized by ``course_lib.nf4`` (and
by bitsandbytes' CPU functions where installed), held by a plain ``nn.Linear``. Each test runs on the CPU (the
C++ extension) and on CUDA when present (the CUDA extension), through the ``device`` fixture.
"""

from __future__ import annotations

import copy

import pytest
import torch

from course_lib import kernels as K
from course_lib import nf4
from course_lib.kernels import nf4_linear

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _linear(k: int, n: int, bias: bool = True, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(k, n, bias=bias)


def _dequantized_linear(lin: torch.nn.Linear, blocksize: int = 64) -> torch.nn.Linear:
    """The reference: an nn.Linear whose weight is course_lib.nf4's dequantized NF4 weight (float32)."""
    ref = copy.deepcopy(lin).float()
    with torch.no_grad():
        w = lin.weight.detach().float()
        ref.weight.copy_(nf4.dequantize_nf4(*nf4.quantize_nf4(w, blocksize), w.shape, blocksize))
    return ref


def _dtypes(device: str):
    return (torch.float16, torch.bfloat16, torch.float32) if device == "cuda" else (torch.float32, torch.bfloat16)


# atol for outputs of size ~1-3: products summed in fp32 by every path; the output rounded to the dtype
_TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2, torch.float64: 1e-4}


@pytest.mark.parametrize("lead", [(), (1,), (3, 5), (2, 40)], ids=["1d", "batch1", "gemv15", "prefill80"])
def test_forward_matches_the_dequantized_linear(device, lead):
    """Any leading dims; <= 16 rows run gemv_nf4, more dequantize + matmul; output dtype = input dtype."""
    lin = _linear(256, 96)
    layer = K.NF4Linear.from_linear(lin).to(device)
    ref = _dequantized_linear(lin).to(device)
    for dtype in _dtypes(device):
        x = torch.randn(*lead, 256, generator=torch.Generator().manual_seed(1)).to(device, dtype)
        with torch.no_grad():
            got, want = layer(x), ref(x.float())
        assert got.dtype == dtype and got.shape == (*lead, 96)
        torch.testing.assert_close(got.float(), want, rtol=0, atol=_TOL[dtype], msg=lambda m: f"{dtype}: {m}")


def test_small_batches_run_the_gemv_and_large_ones_dequantize(device, monkeypatch):
    calls = {"gemv": 0, "dequantize": 0}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(nf4_linear, "gemv_nf4", spy("gemv", nf4_linear.gemv_nf4))
    monkeypatch.setattr(nf4_linear, "dequantize_nf4", spy("dequantize", nf4_linear.dequantize_nf4))
    layer = K.NF4Linear.from_linear(_linear(128, 64)).to(device)
    dtype = torch.float16 if device == "cuda" else torch.float32
    layer(torch.randn(2, 8, 128, device=device, dtype=dtype))  # 16 rows
    assert calls == {"gemv": 1, "dequantize": 0}
    layer(torch.randn(17, 128, device=device, dtype=dtype))
    assert calls == {"gemv": 1, "dequantize": 1}


def test_codes_and_outputs_match_bitsandbytes():
    """The buffers are bitsandbytes' quantize_4bit codes and absmax; its Linear4bit gives the same outputs."""
    bnb = pytest.importorskip("bitsandbytes")
    lin = _linear(512, 128)
    layer = K.NF4Linear.from_linear(lin)
    packed, state = bnb.functional.quantize_4bit(lin.weight.detach(), blocksize=64, quant_type="nf4")
    assert torch.equal(layer.packed, packed.flatten()) and torch.equal(layer.absmax, state.absmax)
    theirs = bnb.nn.Linear4bit(512, 128, compute_dtype=torch.float32, compress_statistics=False, quant_type="nf4")
    theirs.weight = bnb.nn.Params4bit(lin.weight.detach().clone(), requires_grad=False, quant_type="nf4",
                                      blocksize=64, compress_statistics=False)
    theirs.bias = torch.nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
    theirs = theirs.to("cpu")
    w_theirs = bnb.functional.dequantize_4bit(theirs.weight.data, theirs.weight.quant_state)
    assert torch.equal(layer.dequantized_weight(), w_theirs)
    x = torch.randn(3, 512)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), theirs(x), rtol=0, atol=1e-4)


def test_swapped_course_lm_gives_the_dequantized_models_logits(device):
    """The course's Llama-style LM: every linear layer but lm_head becomes NF4Linear; logits equal those of
    the same model with its NF4-dequantized weights in nn.Linear layers (decode-sized and prefill-sized inputs)."""
    from course_lib.models import load_causal_lm

    dtype = torch.float16 if device == "cuda" else torch.float32
    model, _ = load_causal_lm(device=device, dtype=dtype)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in reference.named_modules():
            if type(module) is torch.nn.Linear and name != "lm_head":
                w = module.weight.float()
                module.weight.copy_(nf4.dequantize_nf4(*nf4.quantize_nf4(w, 64), w.shape, 64).to(dtype))
    swapped = K.replace_linears_nf4(model)
    assert swapped is model
    kinds = {name: type(m) for name, m in model.named_modules() if isinstance(m, (torch.nn.Linear, K.NF4Linear))}
    assert kinds.pop("lm_head") is torch.nn.Linear and set(kinds.values()) == {K.NF4Linear}
    assert len(kinds) == 7 * model.config.num_hidden_layers
    assert model.lm_head.weight is model.model.embed_tokens.weight, "the tied output layer stays tied"
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        for inputs in (ids[:1, :8], ids):  # 8 rows: the GEMV; 24 rows: dequantize + matmul
            got, want = model(inputs).logits.float(), reference(inputs).logits.float()
            scale = float(want.abs().max())
            assert float((got - want).abs().max()) <= (1e-5 if dtype == torch.float32 else 2e-2) * scale
            assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_skip_names_whole_dotted_components():
    model = torch.nn.Sequential()
    for i in range(12):
        model.add_module(str(i), torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU()))
    model.add_module("lm_head", torch.nn.Linear(64, 8))
    K.replace_linears_nf4(model, skip=("1", "lm_head"))
    assert type(model[1][0]) is torch.nn.Linear and type(model.lm_head) is torch.nn.Linear
    assert all(type(model[i][0]) is K.NF4Linear for i in (0, 10, 11)), "'1' must not match '10' or '11'"
    nested = torch.nn.ModuleDict({"block": torch.nn.ModuleDict({"fc": torch.nn.Linear(64, 64),
                                                                "out": torch.nn.Linear(64, 64)})})
    K.replace_linears_nf4(nested, skip=("block.fc",))
    assert type(nested["block"]["fc"]) is torch.nn.Linear and type(nested["block"]["out"]) is K.NF4Linear


def test_shared_layers_stay_shared_and_subclasses_stay():
    shared = torch.nn.Linear(64, 64)
    model = torch.nn.ModuleDict({"a": shared, "b": shared, "mha": torch.nn.MultiheadAttention(64, 4)})
    K.replace_linears_nf4(model, skip=())
    assert type(model["a"]) is K.NF4Linear and model["a"] is model["b"]
    assert type(model["mha"].out_proj) is not K.NF4Linear, "MultiheadAttention reads out_proj.weight itself"


def test_state_dict_round_trip_and_dtype_casts(device):
    lin = _linear(128, 48)
    layer = K.NF4Linear.from_linear(lin).to(device)
    state = layer.state_dict()
    assert set(state) == {"packed", "absmax", "bias"} and state["packed"].dtype == torch.uint8
    fresh = K.NF4Linear(128, 48, bias=True, blocksize=64, device=device)
    assert not torch.equal(fresh.packed, layer.packed)
    fresh.load_state_dict(state)
    x = torch.randn(4, 128, device=device)
    torch.testing.assert_close(fresh(x), layer(x), rtol=0, atol=0)
    # half() casts the bias, not the absmax (the kernels read float32 scales), and outputs follow the input
    half = copy.deepcopy(layer).half()
    assert half.absmax.dtype == torch.float32 and half.bias.dtype == torch.float16
    assert torch.equal(half.absmax, layer.absmax)
    assert half(x.half()).dtype == torch.float16
    moved = copy.deepcopy(layer).to("cpu")
    assert moved.packed.device.type == moved.absmax.device.type == "cpu"


def test_compiles_with_fullgraph(device):
    """One torch.compile graph, no graph break, for the GEMV path and the dequantize path."""
    layer = K.NF4Linear.from_linear(_linear(128, 64)).to(device)
    dtype = torch.float16 if device == "cuda" else torch.float32
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    for rows in (1, 20):
        x = torch.randn(rows, 128, device=device, dtype=dtype)
        assert torch.equal(compiled(x), layer(x))


def test_cuda_graph_replay_and_no_host_sync(device):
    """Decode-sized (batch 1 and 8) and prefill-sized inputs: captured in a CUDA graph, replayed on new input,
    and run under CUDA's sync debug mode "error" (a device-to-host copy would raise)."""
    if device != "cuda":
        pytest.skip("CUDA graphs and host synchronization are CUDA matters")
    layer = K.NF4Linear.from_linear(_linear(4096, 512).cuda().half())
    for rows in (1, 8, 64):
        x = torch.randn(rows, 4096, device="cuda", dtype=torch.float16)
        layer(x)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            layer(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        static = x.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = layer(static)
        static.copy_(x * 2)
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(out, layer(x * 2), rtol=0, atol=0)


@pytest.mark.parametrize("call, error, regex", [
    (lambda: K.NF4Linear.from_linear(torch.nn.Conv1d(4, 4, 1)), TypeError, "linear"),
    (lambda: K.NF4Linear.from_linear(torch.nn.Linear(64, 8), blocksize=7), ValueError, "blocksize"),
    (lambda: K.NF4Linear.from_linear(torch.nn.Linear(64, 8), blocksize=0), ValueError, "blocksize"),
    (lambda: K.NF4Linear(0, 8), ValueError, "in_features"),
    (lambda: K.NF4Linear(8, 4.0), TypeError, "out_features"),
    (lambda: K.NF4Linear(8, 4, bias=None), TypeError, "bias"),
    (lambda: K.NF4Linear(8, 4, dtype=torch.int8), TypeError, "dtype"),
    (lambda: K.NF4Linear(64, 8)(torch.randn(2, 32)), ValueError, "x must have in_features = 64"),
    (lambda: K.NF4Linear(64, 8)(torch.ones(2, 64, dtype=torch.int32)), TypeError, "x must have dtype"),
    (lambda: K.NF4Linear(64, 8)(torch.tensor(1.0)), ValueError, "x must have in_features"),
    (lambda: K.NF4Linear(64, 8)([1.0] * 64), TypeError, "x must be a torch.Tensor"),
    (lambda: K.replace_linears_nf4("model"), TypeError, "model"),
    (lambda: K.replace_linears_nf4(torch.nn.Linear(64, 8), skip="lm_head"), TypeError, "skip"),
    (lambda: K.replace_linears_nf4(torch.nn.Linear(64, 8), skip=("",)), TypeError, "skip"),
    (lambda: K.replace_linears_nf4(torch.nn.Linear(64, 8), blocksize=3), ValueError, "blocksize"),
], ids=["linear-type", "blocksize-odd", "blocksize-zero", "in-range", "out-type", "bias-type", "dtype",
        "x-width", "x-dtype", "x-0d", "x-type", "model-type", "skip-str", "skip-empty", "swap-blocksize"])
def test_bad_input_is_named(call, error, regex):
    with pytest.raises(error, match=regex):
        call()


def test_wrong_state_dict_is_refused():
    layer = K.NF4Linear(64, 8)
    with pytest.raises(RuntimeError, match="packed"):
        layer.load_state_dict(K.NF4Linear(64, 16).state_dict())


def test_empty_batch_gives_an_empty_output():
    layer = K.NF4Linear.from_linear(_linear(64, 8))
    assert layer(torch.zeros(0, 3, 64)).shape == (0, 3, 8)
