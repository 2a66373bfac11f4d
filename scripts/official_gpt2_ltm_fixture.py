#!/usr/bin/env python3
"""Runs the ∞-former's own GPT-2 with the long-term memory
(deep-spin/infinite-former, `finetune_gpt2/src/transformers/models/gpt2/`:
`modeling_gpt2.py`, `long_term_attention.py`) on a small random model and
saves what memlab's `gpt2-ltm` must compute, for
`crates/cli/tests/parity.rs`.

The official package is a copy of transformers 4.5.0.dev0 and still
imports on torch 2.15 with three workarounds, all outside its model code:
its dependency-version check is skipped (it pins tokenizers 0.10, which
no longer builds), the `pip` packages it imports but does not pin are
installed (`entmax`, `matplotlib`, `requests`, `sacremoses`, `regex`,
`filelock`, `tqdm`, `setuptools<81` for `pkg_resources`), and, as its
`LongTermAttention` hard-codes `self.device = 'cuda'`, tensors it moves to
'cuda' while it is built stay on the CPU, and each module's `device` is
then set to 'cpu'.

The case: GPT-2 with 2 blocks, n_embd 16, 2 heads, vocabulary 41, the
sticky-memory run's long-term memory (`infinite_memory_transformer_sticky_mem`:
512 basis functions, the CNN gate, KL toward N(−1, 0.05²)) with one
change, `sticky_memories = False`: the official sticky memories draw their
sample positions at random (a Categorical over 128 bins), which no other
implementation can reproduce; memlab places them at the density's
quantiles. The official code fixes the block at 512 tokens; the text is 4
blocks, batch 1, as its README runs it. Everything runs in float64 from
float32 weights (its ridge regression inverts a 512 × 512 matrix, which
float32 would not resolve to 1e-4), weights N(0, 0.3²), LayerNorm weights
1 + N(0, 0.1²), biases N(0, 0.1²). Saved: `config.json` and
`model.safetensors` (float32; the official keys, the long-term memory's
under `transformer.h.{i}.attn.long_term_attention.`), and `case.json`
with the tokens, the logits at every 32nd position of each block and the
KL regulariser of each block (`kl_regs.mean()`, as its trainer adds it).
Tests and CI read the files; they never run this script.

    python3 -m pip install torch transformers safetensors numpy entmax \\
        matplotlib requests sacremoses regex filelock tqdm "setuptools<81"
    # a checkout of deep-spin/infinite-former (memlab's `fetch`), outside the repository:
    python3 scripts/official_gpt2_ltm_fixture.py \\
        --official /path/to/infinite-former/finetune_gpt2/src \\
        --out crates/cli/tests/hf-ltm/official-sticky-off
"""

import argparse
import json
import os
import sys
import types

import torch

BLOCK = 512
BLOCKS = 4
EVERY = 32


def import_official(src):
    sys.path.insert(0, src)
    # The package's own pins (tokenizers==0.10.x ...) are not the model's.
    sys.modules["transformers.dependency_versions_check"] = types.ModuleType(
        "transformers.dependency_versions_check"
    )
    import transformers
    from transformers.models.gpt2 import modeling_gpt2
    from transformers.models.gpt2.configuration_gpt2 import GPT2Config

    assert transformers.__file__.startswith(os.path.abspath(src)), transformers.__file__
    return transformers.__version__, modeling_gpt2, GPT2Config


def on_cpu(build):
    """Builds with every `.to('cuda')` kept on the CPU."""
    original = torch.Tensor.to

    def to(self, *args, **kwargs):
        cuda = lambda d: isinstance(d, str) and d.startswith("cuda")
        args = tuple("cpu" if cuda(a) else a for a in args)
        if cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return original(self, *args, **kwargs)

    torch.Tensor.to = to
    try:
        return build()
    finally:
        torch.Tensor.to = original


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", required=True, help="finetune_gpt2/src of a checkout")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    version, modeling_gpt2, GPT2Config = import_official(args.official)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    sticky = dict(
        long_term_attention=True,
        long_term_attention_basis=512,
        long_term_attention_norm="softmax",
        continuous=True,
        infinite_memory=True,
        affines=True,
        mask=True,
        mask_type="cnn",
        mask_dropout=0.0,
        attn_drop=0.1,
        kl_regularizer=True,
        sigma_0=0.05,
        mu_0=-1,
        sticky_memories=False,
    )
    config = GPT2Config(
        vocab_size=41, n_positions=BLOCK, n_ctx=BLOCK, n_embd=16, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **sticky,
    )
    model = on_cpu(lambda: modeling_gpt2.GPT2LMHeadModel(config))
    for module in model.modules():
        if type(module).__name__ == "LongTermAttention":
            module.device = "cpu"
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn_like(param))
            else:
                param.copy_(0.3 * torch.randn_like(param))
            # float32 weights, computed with in float64.
            param.copy_(param.float().double())
    model.eval()

    text = torch.randint(0, 41, (1, BLOCK * BLOCKS))
    positions = list(range(0, BLOCK, EVERY)) + [BLOCK - 1]
    segments = []
    with torch.no_grad():
        for b in range(BLOCKS):
            ids = text[:, b * BLOCK:(b + 1) * BLOCK]
            out, kl_regs = model(input_ids=ids)
            logits = out.logits[:, positions, :]
            segments.append({
                "input": ids.tolist(),
                "logits": logits.tolist(),
                "kl": None if kl_regs is None else kl_regs.mean().item(),
            })
            print(f"block {b}: kl {segments[-1]['kl']}")

    os.makedirs(args.out, exist_ok=True)
    model.float()
    # Neither the tied head nor the causal-mask buffers are written
    # (save_pretrained's rule for the one, newer transformers' for the others).
    from safetensors.torch import save_file
    state = {
        k: v.contiguous() for k, v in model.state_dict().items()
        if k != "lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))
    }
    save_file(state, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    json_config = config.to_dict()
    json_config["architectures"] = ["GPT2LMHeadModel"]
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(json_config, f, indent=2, sort_keys=True)
    with open(os.path.join(args.out, "case.json"), "w") as f:
        json.dump({
            "name": os.path.basename(os.path.normpath(args.out)),
            "official": f"deep-spin/infinite-former finetune_gpt2 (transformers {version}), torch {torch.__version__}",
            "positions": positions,
            "segments": segments,
        }, f)


if __name__ == "__main__":
    main()
