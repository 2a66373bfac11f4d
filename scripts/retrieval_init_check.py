"""Is associative retrieval's plateau memlab's, or its initialisation's?

An independent PyTorch model of the memlab baseline's shape on the same
task (docs/reproductions.md, "Making the tasks learnable"): K key-value
pairs, keys 11-36, values 0-9, `k1 v1 ... kK vK q 10 v(q)`, loss and
accuracy on the answer alone; 2 pre-LN blocks, d_model 64, 4 heads, d_ff
128, ReLU, no dropout, learned absolute positions, a final LayerNorm, the
output head tied to the embedding with a bias; AdamW at lr, 50 warm-up
steps, cosine decay to 1e-4, global clipping at 1.0, batch 32.

    INIT=1 python scripts/retrieval_init_check.py 2 4000 1   # memlab's init
    INIT=0 python scripts/retrieval_init_check.py 2 4000 1   # PyTorch's

INIT=1 draws every matrix N(0, STD^2) (STD: 0.02) and every bias 0, as
memlab does (`init_std`, the Transformer-XL code's); EMB_STD, when given,
sets the token and position embeddings' std alone. INIT=0 keeps PyTorch's
defaults (Xavier-uniform attention, Kaiming-uniform linears, N(0, 1)
embeddings); INIT=2 is memlab's `init = "torch"`, nn.Linear's default for
every linear map including q, k and v (see the code).
Arguments: pairs, steps, seed[, lr]. Prints step, the last batch's loss and
the accuracy on 512 fresh queries every 1,000 steps. CPU, one thread.
"""
import math
import os
import random
import sys

import torch

torch.set_num_threads(1)
INIT = os.environ.get("INIT", "0")
MEMLAB_INIT = INIT == "1"
STD = os.environ.get("STD", "0.02")
K, STEPS, SEED = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
LR = float(sys.argv[4]) if len(sys.argv) > 4 else 3e-3
torch.manual_seed(SEED)
random.seed(SEED)
L, V, D = 2 * K + 2, 37, 64


def batch(n):
    xs, ys = [], []
    for _ in range(n):
        keys = random.sample(range(11, 37), K)
        values = random.sample(range(10), K)
        q = random.randrange(K)
        seq = [t for kv in zip(keys, values) for t in kv] + [keys[q], 10, values[q]]
        xs.append(seq[:-1])
        ys.append(seq[-1])
    return torch.tensor(xs), torch.tensor(ys)


class Baseline(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(V, D)
        self.pos = torch.nn.Embedding(L, D)
        layer = torch.nn.TransformerEncoderLayer(
            D, 4, 128, dropout=0.0, batch_first=True, norm_first=True, activation="relu"
        )
        self.blocks = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.ln = torch.nn.LayerNorm(D)
        self.bias = torch.nn.Parameter(torch.zeros(V))
        if MEMLAB_INIT:
            for name, p in self.named_parameters():
                if name in ("emb.weight", "pos.weight"):
                    torch.nn.init.normal_(p, 0, float(os.environ.get("EMB_STD", STD)))
                elif p.dim() > 1:
                    torch.nn.init.normal_(p, 0, float(STD))
                elif "norm" not in name and not name.startswith("ln"):
                    torch.nn.init.zeros_(p)
        elif INIT == "2":
            # memlab's `init = "torch"`: every linear map's weight and bias
            # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (nn.Linear's default), the
            # attention's q, k, v maps as three such linears (PyTorch's own
            # attention draws them Xavier-uniform, its bias 0), embeddings
            # N(0, 1), the output bias 0, LayerNorms 1 and 0.
            bound = 1 / math.sqrt(D)
            for name, p in self.named_parameters():
                if name.endswith("in_proj_weight") or name.endswith("in_proj_bias"):
                    torch.nn.init.uniform_(p, -bound, bound)
                elif name.endswith("out_proj.bias"):
                    torch.nn.init.uniform_(p, -bound, bound)
                elif name.endswith("linear2.bias"):
                    torch.nn.init.uniform_(p, -1 / math.sqrt(128), 1 / math.sqrt(128))

    def forward(self, x):
        h = self.emb(x) + self.pos(torch.arange(x.shape[1]))
        mask = torch.nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        h = self.ln(self.blocks(h, mask=mask, is_causal=True))
        return (h @ self.emb.weight.T + self.bias)[:, -1]


model = Baseline()
opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0)
floor = 1e-4 / LR
schedule = torch.optim.lr_scheduler.LambdaLR(
    opt,
    lambda t: min(1, (t + 1) / 50) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t / STEPS))),
)
for t in range(STEPS):
    x, y = batch(32)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    schedule.step()
    if (t + 1) % 1000 == 0:
        with torch.no_grad():
            x, y = batch(512)
            acc = (model(x).argmax(-1) == y).float().mean().item()
        print(t + 1, round(loss.item(), 3), acc, flush=True)
