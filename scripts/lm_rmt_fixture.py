#!/usr/bin/env python3
"""Writes a parity case computed by booydar/LM-RMT's own MemTransformerLM.

The files follow the format of ../shared/parity/README.md: NAME.json (the
config, then per segment the input, target, per-token NLL, the memory tokens
written and the Transformer-XL cache) and NAME.safetensors (the state_dict
under the official names; a tied output weight is not stored twice), plus
NAME.pt (torch.save of the state_dict) with --pt.

The official code is not part of memlab: fetch booydar/LM-RMT and pass its
pytorch/ folder with --lm-rmt. Needs PyTorch (no other package).

    python3 scripts/lm_rmt_fixture.py --lm-rmt /path/to/LM-RMT/pytorch \\
        --out crates/cli/tests/parity --name rmt-prenorm \\
        --num_mem_tokens 3 --mem_len 6 --pre_lnorm 1

Parameters are drawn as the shared cases were: LayerNorm weights
1 + N(0, 0.1²), memory tokens N(0, 1), everything else N(0, 0.2²); the model
runs in eval mode, dropout 0, memory tokens and cache carried from segment to
segment as LM-RMT's train.py carries them.
"""

import argparse
import json
import os
import struct
import sys

import torch


def flag(parser, name, kind, default):
    parser.add_argument(f"--{name}", type=kind, default=default)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lm-rmt", required=True, help="LM-RMT's pytorch/ folder")
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--pt", action="store_true", help="also write NAME.pt")
    for name, kind, default in [
        ("n_layer", int, 2), ("n_head", int, 2), ("d_model", int, 16),
        ("d_head", int, 8), ("d_inner", int, 32), ("vocab", int, 13),
        ("seg", int, 5), ("batch", int, 2), ("mem_len", int, 0),
        ("num_mem_tokens", int, 0), ("pre_lnorm", int, 0),
        ("same_length", int, 0), ("clamp_len", int, -1), ("segments", int, 3),
        ("seed", int, 0), ("mem_at_end", int, 1),
        ("read_mem_from_cache", int, 0), ("tie_weight", int, 1),
    ]:
        flag(p, name, kind, default)
    a = p.parse_args()

    sys.path.insert(0, os.path.abspath(a.lm_rmt))
    sys.path.insert(0, os.path.join(os.path.abspath(a.lm_rmt), "utils"))
    from mem_transformer import MemTransformerLM  # the official model

    torch.manual_seed(a.seed)
    model = MemTransformerLM(
        a.vocab, a.n_layer, a.n_head, a.d_model, a.d_head, a.d_inner,
        dropout=0.0, dropatt=0.0, tie_weight=bool(a.tie_weight),
        pre_lnorm=bool(a.pre_lnorm), tgt_len=a.seg, ext_len=0,
        mem_len=a.mem_len, num_mem_tokens=a.num_mem_tokens,
        read_mem_from_cache=bool(a.read_mem_from_cache),
        mem_at_end=bool(a.mem_at_end), cutoffs=[],
        same_length=bool(a.same_length), attn_type=0, clamp_len=a.clamp_len,
    )
    model.eval()
    g = torch.Generator().manual_seed(a.seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=g)
            if "layer_norm.weight" in name:
                param.copy_(1 + 0.1 * noise)
            elif name == "mem_tokens":
                param.copy_(noise)
            else:
                param.copy_(0.2 * noise)

    tokens = torch.randint(0, a.vocab, (a.segments * a.seg + 1, a.batch), generator=g)
    segments = []
    mems = tuple()
    m = a.num_mem_tokens
    mem_tokens = model.mem_tokens.repeat(1, a.batch, 1) if m else None
    with torch.no_grad():
        for s in range(a.segments):
            inp = tokens[s * a.seg:(s + 1) * a.seg]
            tgt = tokens[s * a.seg + 1:(s + 1) * a.seg + 1]
            ret = model(inp, tgt, *mems, mem_tokens=mem_tokens)
            if m:
                mem_tokens, loss, mems = ret[0], ret[1], tuple(ret[2:])
            else:
                loss, mems = ret[0], tuple(ret[1:])
            segments.append({
                "input": inp.tolist(),
                "target": tgt.tolist(),
                "nll": loss.tolist(),
                "mem_tokens": mem_tokens.tolist() if m else None,
                "cache": [c.tolist() for c in mems] if mems else None,
            })

    config = {k: getattr(a, k) for k in [
        "n_layer", "n_head", "d_model", "d_head", "d_inner", "vocab", "seg",
        "batch", "mem_len", "num_mem_tokens", "segments", "seed",
        "clamp_len"]}
    for k in ["pre_lnorm", "same_length", "mem_at_end", "read_mem_from_cache",
              "tie_weight"]:
        config[k] = bool(getattr(a, k))
    config = {"name": a.name, **config}
    os.makedirs(a.out, exist_ok=True)
    base = os.path.join(a.out, a.name)
    with open(base + ".json", "w") as f:
        json.dump({"config": config, "segments": segments}, f)

    state = model.state_dict()
    if a.tie_weight:
        del state["crit.out_layers.0.weight"]  # the embedding, not stored twice
    write_safetensors(base + ".safetensors", state)
    if a.pt:
        torch.save(model.state_dict(), base + ".pt")


def write_safetensors(path, state):
    """The safetensors format (a u64 header length, a JSON header, f32 data)."""
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for key, t in state.items():
        values = t.detach().float().contiguous().flatten().tolist()
        data = struct.pack(f"<{len(values)}f", *values)
        header[key] = {"dtype": "F32", "shape": list(t.shape),
                       "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


if __name__ == "__main__":
    main()
