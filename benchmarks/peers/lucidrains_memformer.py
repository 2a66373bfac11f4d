"""lucidrains' `memformer` package (PyPI `memformer`, 0.3.1) timed on the CPU
the way `memlab bench` times memlab's Memformer: tokens/s of one segment's
forward pass (no gradients) and of one training step (forward, backward,
global-norm clip, Adam), memory carried and detached between segments,
median of the timed steps (peer_timing.py: at least 15 steps and 3
seconds). Sizes of configs/bench.toml's memformer entry:
batch 4, segments of 64 tokens, vocabulary 256, d_model 128, 1 encoder and
1 decoder layer, 4 heads, d_ff 512 (the package's `mult = 4`), 8 slots.

It is not the same model (docs/architectures/memformer.md): the package
writes memory with a GRU cell and a feed-forward block and uses bucketed
relative position biases; memlab follows the paper. The parameter counts
are printed beside the figures.

    pip install torch einops memformer==0.3.1
    python3 benchmarks/peers/lucidrains_memformer.py
"""
import json
import os

import torch
from memformer import Memformer

from peer_timing import tokens_per_second

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
BATCH, SEG, VOCAB, DIM, SLOTS, HEADS = 4, 64, 256, 128, 8, 4

torch.manual_seed(0)
model = Memformer(dim=DIM, num_memory_slots=SLOTS, mem_update_attn_heads=HEADS,
                  enc_num_tokens=VOCAB, enc_max_seq_len=SEG, enc_depth=1, enc_heads=HEADS,
                  dec_num_tokens=VOCAB, dec_max_seq_len=SEG, dec_depth=1, dec_heads=HEADS)
opt = torch.optim.Adam(model.parameters(), lr=2.5e-4)
params = sum(p.numel() for p in model.parameters())
src = torch.randint(0, VOCAB, (BATCH, SEG))
tgt = torch.randint(0, VOCAB, (BATCH, SEG + 1))  # the wrapper shifts it: SEG predictions

def forward(mems):
    with torch.no_grad():
        model.eval()
        return model(src, tgt, mems=mems).mem.detach()

def train(mems):
    model.train()
    out = model(src, tgt, mems=mems)
    opt.zero_grad()
    out.dec_out.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    opt.step()
    return out.mem.detach()

print(json.dumps({"peer": "lucidrains/memformer 0.3.1", "params": params,
                  "threads": torch.get_num_threads(),
                  "fwd_tok_s": tokens_per_second(forward, BATCH * SEG),
                  "train_tok_s": tokens_per_second(train, BATCH * SEG)}))
