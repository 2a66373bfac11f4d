#!/usr/bin/env python3
"""Writes parity cases computed by Hugging Face transformers' GPT2LMHeadModel.

Each case is a folder, as `memlab parity --from hf --fixture DIR` and
`memlab import --from hf --model DIR` read it:

- config.json and model.safetensors: a small GPT-2 with random weights,
  written by `save_pretrained` (the tied head once, as
  `transformer.wte.weight`);
- case.json: `name`, then per segment `input` ([batch][len] token ids),
  `logits` ([batch][len][vocab]) and `hidden_states` ([n_layer + 1][batch]
  [len][n_embd], `output_hidden_states=True`: the embeddings, each block's
  output, the last after ln_f).

Every segment is read on its own, positions from 0: memlab's GPT-2 reads a
long text as segments, its learned positions restarting at each, as the
∞-former's official fine-tuning code feeds GPT-2 one block at a time. A case
with `n_positions` shorter than its text cuts the text into segments of at
most `n_positions` tokens.

Parameters from a seeded generator, as the LM-RMT cases draw theirs:
every weight matrix and embedding N(0, 0.2²), every LayerNorm weight
1 + N(0, 0.1²), every bias N(0, 0.1²) (GPT-2's own N(0, 0.02²) keeps the
feed-forward inputs so small that GELU and its tanh approximation agree to
1e-6, and the case could not tell them apart); eval mode, no dropout,
float32.

    python3 -m pip install torch transformers safetensors   # outside the repository
    python3 scripts/hf_gpt2_fixture.py --out crates/cli/tests/hf

Tests and CI never run this script: its output is committed.
"""

import argparse
import json
import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel

CASES = [
    # 2 layers of width 32, 4 heads; one segment of 7 tokens, batch 2.
    dict(name="gpt2-2l-d32", n_layer=2, n_embd=32, n_head=4, vocab=41,
         n_positions=16, batch=2, text=7, seed=1),
    # n_positions (8) shorter than the text (19): segments of 8, 8 and 3.
    dict(name="gpt2-short-positions", n_layer=2, n_embd=24, n_head=3, vocab=29,
         n_positions=8, batch=1, text=19, seed=2),
    # A batch of 3, 3 layers, an n_inner of its own.
    dict(name="gpt2-batch3", n_layer=3, n_embd=16, n_head=2, vocab=23,
         n_positions=12, batch=3, text=12, seed=3, n_inner=40),
]


def build(case):
    config = GPT2Config(
        vocab_size=case["vocab"], n_positions=case["n_positions"],
        n_embd=case["n_embd"], n_layer=case["n_layer"], n_head=case["n_head"],
        n_inner=case.get("n_inner"), resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, activation_function="gelu_new",
        bos_token_id=case["vocab"] - 1, eos_token_id=case["vocab"] - 1,
    )
    torch.manual_seed(case["seed"])
    model = GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(case["seed"] + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif ".ln_" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def write_case(case, out):
    model = build(case)
    folder = os.path.join(out, case["name"])
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    g = torch.Generator().manual_seed(case["seed"] + 2000)
    text = torch.randint(0, case["vocab"], (case["batch"], case["text"]), generator=g)
    segments = []
    for start in range(0, case["text"], case["n_positions"]):
        ids = text[:, start:start + case["n_positions"]]
        with torch.no_grad():
            result = model(ids, output_hidden_states=True)
        segments.append({
            "input": ids.tolist(),
            "logits": result.logits.tolist(),
            "hidden_states": [h.tolist() for h in result.hidden_states],
        })
    with open(os.path.join(folder, "case.json"), "w") as f:
        json.dump({"name": case["name"], "segments": segments}, f)
    # Keep the folder to the three files memlab reads.
    for extra in os.listdir(folder):
        if extra not in ("config.json", "model.safetensors", "case.json"):
            os.remove(os.path.join(folder, extra))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    for case in CASES:
        write_case(case, args.out)
        print("wrote", os.path.join(args.out, case["name"]))


if __name__ == "__main__":
    main()
