"""The official ∞-former (deep-spin/infinite-former, `sorting/`: its
`MemTransformerLM` with `LongTermAttention`) timed on the CPU the way
`memlab bench` times memlab's ∞-former: tokens/s of one segment's forward
pass (no gradients) and of one training step (forward, backward of the loss
plus the KL term, global-norm clip, Adam), memory carried and detached
between segments, median of the timed steps (peer_timing.py: at least 15
steps and 3 seconds), after enough segments that every timed one reads and
writes the long-term memory. Sizes of
benchmarks/peers/infinity-former.toml: batch 4, segments of 64 tokens,
vocabulary 256, d_model 128, 2 layers, 4 heads of 32, d_inner 512, dropout
0.1, post-LN; a short-term memory of 64 states, N = 64 basis functions,
the sorting run's options (`--long_term_attention_norm softmax --affines
--augment --augment_len <segment> --infinite_memory --mask --mask_type cnn
--kl_regularizer --kl_m 1e-6 --sigma_0 .05`); M = 512 samples and τ = 0.75
are hard-coded in `long_term_attention.py`. Parameters: 789,504, of which
98,304 are never used (`qkv_net_` and the long-term `proj_query`, outside
the graph); the 691,200 others are memlab's 691,456 less its output bias
(256).

The published `sorting/` code does not run as it stands, on any device, so
this driver works round five faults without touching the model's
arithmetic:
- `mem_transformer.py` imports `attention` and
  `long_term_attention_transformer`, which the repository does not hold
  (neither class is used by the model): empty stand-in modules;
- `LongTermAttention.__init__` hard-codes `self.device = 'cuda'` and builds
  its basis matrices there: the file is loaded with that one assignment
  read as `'cpu'`;
- it reads `self.share_mask`, which nothing sets: a class attribute
  `share_mask = False` (the `MemTransformerLM` default);
- `MemTransformerLM._update_mems` reads `self.augment`, which nothing sets
  (train.py neither): set to True, as `--augment` means;
- train.py passes `continuous_attention=` and `nfinite_memory=` (sic),
  which `MemTransformerLM.__init__` does not take: the model is built
  here with the constructor's own names (`infinite_memory=True`).

    pip install torch numpy entmax matplotlib
    # INFTY_DIR = the sorting/ folder of a deep-spin/infinite-former
    # checkout, outside the repository (never committed)
    INFTY_DIR=... python3 benchmarks/peers/deepspin_infinity_former.py
    memlab bench --config benchmarks/peers/infinity-former.toml --set bench.min_seconds=3
"""
import json
import os
import sys
import types

import torch

from peer_timing import tokens_per_second

SORTING = os.environ["INFTY_DIR"]
sys.path[:0] = [SORTING, os.path.join(SORTING, "utils")]
for stand_in in ["attention", "long_term_attention_transformer"]:
    module = types.ModuleType(stand_in)
    module.ContinuousAttention = module.LongTermAttentionTransformer = None
    sys.modules[stand_in] = module

source = open(os.path.join(SORTING, "long_term_attention.py")).read()
assert source.count("self.device = 'cuda'") == 1, "long_term_attention.py is not the version this driver knows"
lta = types.ModuleType("long_term_attention")
lta.__file__ = os.path.join(SORTING, "long_term_attention.py")
exec(compile(source.replace("self.device = 'cuda'", "self.device = 'cpu'"), lta.__file__, "exec"), lta.__dict__)
lta.LongTermAttention.share_mask = False
sys.modules["long_term_attention"] = lta

from mem_transformer import MemTransformerLM  # noqa: E402

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
BATCH, SEG, VOCAB, D, LAYERS, HEADS, FF, MEM, BASIS = 4, 64, 256, 128, 2, 4, 512, 64, 64
KL_M = 1e-6

torch.manual_seed(0)
model = MemTransformerLM(
    VOCAB, LAYERS, HEADS, D, D // HEADS, FF, dropout=0.1, dropatt=0.0,
    tgt_len=SEG, eval_tgt_len=SEG, ext_len=0, mem_len=MEM,
    long_term_attention=True, long_term_attention_basis=BASIS,
    long_term_attention_norm="softmax", infinite_memory=True, n_layers=LAYERS,
    augment_len=SEG, affines=True, mask=True, mask_type="cnn",
    kl_regularizer=True, sigma_0=0.05, mu_0=None,
)
model.augment = True
# The relative-position biases are created uninitialised (torch.Tensor);
# train.py's weights_init draws them N(0, 0.02²) (its init_std).
torch.nn.init.normal_(model.r_w_bias, 0.0, 0.02)
torch.nn.init.normal_(model.r_r_bias, 0.0, 0.02)
opt = torch.optim.Adam(model.parameters(), lr=2e-4)
params = sum(p.numel() for p in model.parameters())


def batch():
    data = torch.randint(0, VOCAB, (SEG, BATCH))  # [time, batch], as train.py feeds it
    return data, torch.randint(0, VOCAB, (SEG, BATCH))


# Segments 1 and 2 fill the short-term memory; from segment 3 every one
# writes its predecessor's leaving states into the long-term memory and
# reads it, so those two are not timed either.
def run(step):
    return tokens_per_second(step, BATCH * SEG, state=(), fill=2, inputs=batch)


def forward(mems, data, target):
    model.eval()
    with torch.no_grad():
        ret = model(data, target, *mems, doc_final=True)
    return tuple(m.detach() for m in ret[0][1:])


def train(mems, data, target):
    model.train()
    ret, _, _, kl = model(data, target, *mems, doc_final=True)
    loss = ret[0]
    if kl is not None:
        loss = loss + KL_M * kl.float().mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    opt.step()
    return tuple(m.detach() for m in ret[1:])


fwd = run(forward)
train_tok_s = run(train)
# Every timed segment went through the long-term memory.
assert all(layer.dec_attn.long_term_attention.B_past is not None for layer in model.layers)
print(json.dumps({"peer": "deep-spin/infinite-former sorting/", "params": params,
                  "threads": torch.get_num_threads(),
                  "fwd_tok_s": fwd, "train_tok_s": train_tok_s}))
