"""Greedy generation in Hugging Face transformers, timed as memlab bench
times it (configs/bench-generate.toml): a GPT-2 of the same sizes (2 blocks,
n_embd 128, 4 heads, n_inner 512, 256 positions, 256-token vocabulary,
random weights: nothing is downloaded), one row from one prompt token, 255
new tokens per call with the key-value cache (`use_cache=True`, greedy).
Prints the median call's tokens/s and the interquartile range over at least
5 calls and 1 s of timed calls, after 2 untimed ones.

    python scripts/hf_generate_bench.py [--threads N]
"""

import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
parser.add_argument("--tokens", type=int, default=255)
args = parser.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)

torch.manual_seed(0)
config = GPT2Config(
    vocab_size=256,
    n_positions=256,
    n_embd=128,
    n_layer=2,
    n_head=4,
    n_inner=512,
    bos_token_id=None,
    eos_token_id=None,
)
model = GPT2LMHeadModel(config).eval()
prompt = torch.tensor([[128]])


def call():
    with torch.inference_mode():
        out = model.generate(
            prompt,
            max_new_tokens=args.tokens,
            min_new_tokens=args.tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )
    assert out.shape[1] == 1 + args.tokens, out.shape


for _ in range(2):
    call()
times = []
start = time.perf_counter()
while len(times) < 5 or time.perf_counter() - start < 1.0:
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
rates = sorted(args.tokens / t for t in times)
q = statistics.quantiles(rates, n=4)
print(
    f"hf gpt2 greedy generate: {statistics.median(rates):.0f} tokens/s "
    f"({q[0]:.0f}-{q[2]:.0f}), {len(times)} calls, torch {torch.__version__}, "
    f"{torch.get_num_threads()} threads"
)
