#!/usr/bin/env python3
"""Train the course's small causal LM (tokenizer and model) and write it as a Hugging Face folder.

Input: ``.corpus/train.jsonl`` and ``.corpus/valid.jsonl`` from ``scripts/build_corpus.py``, and
the shipped ``course_lib/assets/course_lm_corpus/eval.txt`` for the final numbers.

Steps:
1. a byte-level BPE tokenizer (``tokenizers``), trained on the training documents only;
2. a Llama-style decoder (``LlamaConfig`` + ``LlamaForCausalLM``), trained from scratch with
   AdamW on random windows of the token stream (documents joined by ``<|endoftext|>``), a
   linear warm-up and a cosine decay; the checkpoint with the lowest validation loss is kept;
3. ``save_pretrained`` of both (fp32 safetensors) to ``--out``, plus ``training_summary.json``
   with the settings, the parameter count, the time, the eval perplexity of the model and of
   an add-one unigram model on the same tokens.

The documented run (docs/COURSE_LM.md) used the defaults on one GPU::

    python scripts/build_corpus.py
    python scripts/train_course_lm.py

On CPU it works too, only slower (``--steps`` to shorten it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from course_lib.evaluate import perplexity, unigram_perplexity  # noqa: E402

EOS = "<|endoftext|>"


def log(msg: str) -> None:
    print(msg, flush=True)


def read_jsonl(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE: every byte is a base token, so any text encodes with no unknown token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        model_max_length=10**9,  # perplexity windows are chosen by the caller, not truncation
        clean_up_tokenization_spaces=False,
    )


def encode_stream(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    """Token ids of all documents, each followed by the end-of-text id, as one 1-D tensor."""
    eos = tokenizer.eos_token_id
    encs = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    ids: list[int] = []
    for e in encs:
        ids.extend(e.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    floor = args.lr * args.min_lr_ratio
    return floor + 0.5 * (args.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def eval_loss(model, stream: torch.Tensor, seq_len: int, device, autocast, batch_size: int = 32) -> float:
    """Mean next-token NLL over disjoint windows of ``seq_len + 1`` tokens."""
    model.eval()
    n = (stream.numel() - 1) // seq_len
    total, count = 0.0, 0
    for start in range(0, n, batch_size):
        rows = [stream[i * seq_len:(i + 1) * seq_len + 1] for i in range(start, min(n, start + batch_size))]
        batch = torch.stack(rows).to(device)
        with autocast():
            logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += batch[:, 1:].numel()
    model.train()
    return total / count


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-dir", default=str(REPO / ".corpus"))
    p.add_argument("--eval-text", default=str(REPO / "course_lib/assets/course_lm_corpus/eval.txt"))
    p.add_argument("--out", default=str(REPO / "course_lib/assets/course_lm"))
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=384)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = p.parse_args(argv)

    hf_logging.set_verbosity_error()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    t_start = time.time()
    corpus = Path(args.corpus_dir)
    train_docs = read_jsonl(corpus / "train.jsonl")
    valid_docs = read_jsonl(corpus / "valid.jsonl")
    eval_text = Path(args.eval_text).read_text(encoding="utf-8")
    log(f"corpus: {len(train_docs)} train docs ({sum(map(len, train_docs))} chars), "
        f"{len(valid_docs)} valid docs, eval {len(eval_text)} chars")

    tokenizer = train_tokenizer(train_docs, args.vocab_size)
    train_ids = encode_stream(tokenizer, train_docs)
    valid_ids = encode_stream(tokenizer, valid_docs)
    log(f"tokenizer: vocab {len(tokenizer)}, train {train_ids.numel()} tokens "
        f"({sum(map(len, train_docs)) / train_ids.numel():.2f} chars/token), valid {valid_ids.numel()} tokens "
        f"[{time.time() - t_start:.1f} s]")

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.seq_len,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.02,
    )
    model = LlamaForCausalLM(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: Llama hidden {args.hidden}, {args.layers} layers, {args.heads} heads, "
        f"intermediate {args.intermediate}, vocab {config.vocab_size}, tied embeddings: {n_params:,} parameters")

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda",
    )
    gen = torch.Generator().manual_seed(args.seed)
    max_start = train_ids.numel() - args.seq_len - 1
    best = (float("inf"), -1, None)
    history = []
    tokens_per_step = args.batch_size * args.seq_len
    log(f"training: {args.steps} steps x {tokens_per_step} tokens = {args.steps * tokens_per_step / train_ids.numel():.1f} "
        f"epochs, on {device} ({'bf16 autocast' if use_bf16 else 'fp32'})")
    t_train = time.time()
    model.train()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        starts = torch.randint(0, max_start + 1, (args.batch_size,), generator=gen)
        batch = torch.stack([train_ids[s:s + args.seq_len + 1] for s in starts.tolist()]).to(device, non_blocking=True)
        with autocast():
            logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            el = time.time() - t_train
            log(f"step {step:5d}/{args.steps} loss {loss.item():.4f} lr {lr_at(step, args):.2e} "
                f"{(step + 1) * tokens_per_step / max(el, 1e-9):,.0f} tok/s [{el:.0f} s]")
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            vl = eval_loss(model, valid_ids, args.seq_len, device, autocast)
            history.append({"step": step + 1, "train_loss": round(loss.item(), 4), "valid_loss": round(vl, 4)})
            mark = ""
            if vl < best[0]:
                best = (vl, step + 1, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
                mark = " *best*"
            log(f"  valid loss {vl:.4f} (ppl {math.exp(vl):.2f}) at step {step + 1}{mark}")
    train_seconds = time.time() - t_train

    model.load_state_dict(best[2])
    model = model.float().eval()

    # Final numbers on the shipped eval text, in fp32 (the course's baseline precision).
    t_eval = time.time()
    ppl = perplexity(model, tokenizer, eval_text, max_length=args.seq_len, stride=args.seq_len)
    ppl_strided = perplexity(model, tokenizer, eval_text, max_length=args.seq_len, stride=args.seq_len // 2)
    eval_ids = tokenizer(eval_text, add_special_tokens=False)["input_ids"]
    uni = unigram_perplexity(train_ids, eval_ids, len(tokenizer))
    log(f"eval.txt ({len(eval_ids)} tokens): model perplexity {ppl:.3f} (stride {args.seq_len // 2}: "
        f"{ppl_strided:.3f}); add-one unigram perplexity {uni:.3f} [{time.time() - t_eval:.1f} s]")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    model.cpu().save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    # A class name that transformers 4.x and 5.x both resolve (5.x writes "TokenizersBackend").
    tok_cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")

    summary = {
        "args": vars(args) | {"out": str(args.out)},
        "parameters": n_params,
        "train_tokens": int(train_ids.numel()),
        "valid_tokens": int(valid_ids.numel()),
        "eval_tokens": len(eval_ids),
        "best_step": best[1],
        "best_valid_loss": round(best[0], 4),
        "eval_perplexity": round(ppl, 3),
        "eval_perplexity_stride_half": round(ppl_strided, 3),
        "eval_unigram_perplexity": round(uni, 3),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "tokenizers": __import__("tokenizers").__version__,
        "history": history,
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(f"wrote {out} [{time.time() - t_start:.0f} s total]")


if __name__ == "__main__":
    main()
