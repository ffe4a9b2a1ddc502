"""course_lib.lm_quant (whole-model plumbing) and evaluate.quantization_table on the course LM."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.evaluate import format_table, perplexity, quantization_table
from course_lib.granularity import fake_quantize_weight
from course_lib.lm_quant import (calibration_ids, capture_block_inputs, decoder_blocks, linear_layers,
                                 quantize_linear_weights, quantize_model_rtn, run_block)
from course_lib.models import load_causal_lm


@pytest.fixture(scope="module")
def lm():
    return load_causal_lm()


def test_linear_layers_of_the_course_lm(lm):
    model, _ = lm
    layers = linear_layers(model)
    assert len(layers) == 4 * 7  # q, k, v, o, gate, up, down per block; lm_head skipped
    assert "lm_head" not in layers and all(isinstance(m, nn.Linear) for m in layers.values())
    assert list(linear_layers(decoder_blocks(model)[0])) == [
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert "lm_head" in linear_layers(model, skip=())


def test_calibration_ids_are_deterministic_windows_of_the_calib_split(lm):
    _, tok = lm
    a, b = calibration_ids(tok, 8, 32, seed=1), calibration_ids(tok, 8, 32, seed=1)
    assert a.shape == (8, 32) and a.dtype == torch.long and torch.equal(a, b)
    assert not torch.equal(a, calibration_ids(tok, 8, 32, seed=2))
    with pytest.raises(ValueError, match="seq_len"):
        calibration_ids(tok, 2, 10**7)
    with pytest.raises(ValueError, match="n_samples"):
        calibration_ids(tok, 0, 32)


def test_blocks_run_one_by_one_reproduce_the_model(lm):
    model, tok = lm
    ids = calibration_ids(tok, 6, 24)
    states = capture_block_inputs(model, ids, batch_size=4)
    assert [h.shape[0] for h, _ in states] == [4, 2]
    for block in decoder_blocks(model):
        states = run_block(block, states)
    ours = torch.cat([model.model.norm(h) for h, _ in states])
    with torch.no_grad():
        reference = model.model(ids).last_hidden_state
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_decoder_blocks_rejects_a_plain_module():
    with pytest.raises(TypeError, match="causal LM"):
        decoder_blocks(nn.Linear(2, 2))


def test_rtn_replaces_every_linear_by_its_fake_quantized_weight():
    model, tok = load_causal_lm()
    before = {n: m.weight.detach().clone() for n, m in linear_layers(model).items()}
    head = model.lm_head.weight.detach().clone()
    quantize_model_rtn(model, 4, 128)
    for name, m in linear_layers(model).items():
        assert torch.equal(m.weight, fake_quantize_weight(before[name], 4, 128)), name
    assert torch.equal(model.lm_head.weight, head) or model.config.tie_word_embeddings


def test_rtn_8bit_keeps_perplexity_and_3bit_loses_some():
    text_tokens = 3000
    from course_lib.data import corpus_text
    fp, tok = load_causal_lm()
    q8, _ = load_causal_lm()
    q3, _ = load_causal_lm()
    quantize_model_rtn(q8, 8)
    quantize_model_rtn(q3, 3)
    text = corpus_text("eval")
    p_fp, p8, p3 = (perplexity(m, tok, text, max_tokens=text_tokens) for m in (fp, q8, q3))
    assert abs(p8 / p_fp - 1) < 0.01, (p_fp, p8)
    assert p3 > p_fp * 1.02, (p_fp, p3)


def test_quantize_linear_weights_checks_the_returned_shape():
    model, _ = load_causal_lm()
    with pytest.raises(ValueError, match="shape"):
        quantize_linear_weights(model, lambda name, lin: lin.weight[:1], progress=False)


def test_quantization_table_rows_and_markdown():
    calls = []

    def identity(model, tokenizer, bits, group_size):
        calls.append((bits, group_size))

    rows = quantization_table({"none": identity}, settings=[(4, None), (3, 128)], max_tokens=1500, progress=False)
    assert calls == [(4, None), (3, 128)]
    assert [r["method"] for r in rows] == ["fp32", "none", "none"]
    # an identity "method" leaves the model as it was: same perplexity as fp32, smaller packed size
    assert rows[1]["perplexity"] == pytest.approx(rows[0]["perplexity"], rel=1e-6)
    assert rows[2]["size_mb"] < rows[1]["size_mb"] < rows[0]["size_mb"]
    table = format_table(rows)
    assert table.splitlines()[0] == "| method | bits | group_size | perplexity | size_mb | seconds |"
    assert len(table.splitlines()) == 2 + len(rows)
    assert all(line.rstrip(" |").endswith(" s") for line in table.splitlines()[2:]), "wall times carry their unit"


@pytest.mark.parametrize("kwargs, error, mentions", [
    (dict(methods={}), TypeError, "methods"),
    (dict(methods={"x": 3}), TypeError, "methods"),
    (dict(methods={"x": lambda *a: None}, settings=[(0, None)]), ValueError, "bits"),
    (dict(methods={"x": lambda *a: None}, settings=[(4, -1)]), ValueError, "group_size"),
])
def test_quantization_table_bad_input(kwargs, error, mentions):
    with pytest.raises(error, match=mentions):
        quantization_table(progress=False, **kwargs)
