"""Alternating rounds of the official LM-RMT code and memlab on the CPU.

The procedure of ../shared/peers/README.md, scripted: for each round, for
each configuration (small, bench, mid), the PyTorch peer
(`../shared/peers/lmrmt_cpu.py`) and then each memlab binary given
(`memlab bench --config ../shared/peers/cpu-<config>.toml`), one after
the other in one sitting, so that a noisy machine's drift lands on both.
Every round's figures are kept (JSON lines) and printed as a markdown table
with the ratio memlab ÷ PyTorch of every round.

Two more peers are timed the same way with `--configs memformer` and
`--configs infinity-former`: lucidrains' `memformer` package
(benchmarks/peers/lucidrains_memformer.py against
benchmarks/peers/memformer.toml) and the official ∞-former code
(benchmarks/peers/deepspin_infinity_former.py, which needs INFTY_DIR,
against benchmarks/peers/infinity-former.toml).

    LMRMT_DIR=<LM-RMT checkout>/pytorch python3 scripts/peer_rounds.py \
        --rounds 4 --memlab now=target/release/memlab --out /tmp/peers.jsonl

Needs PyTorch (pip install torch numpy) and a booydar/LM-RMT checkout
outside the repository (never committed); the other two peers need
`pip install einops memformer==0.3.1 entmax matplotlib` and a
deep-spin/infinite-former checkout.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "peers"))
OURS = os.path.normpath(os.path.join(HERE, "..", "benchmarks", "peers"))
CONFIGS = ["small", "bench", "mid"]
# Peers of one model each: (driver, memlab bench config, architecture).
SINGLE = {
    "memformer": ("lucidrains_memformer.py", "memformer.toml", "memformer"),
    "infinity-former": ("deepspin_infinity_former.py", "infinity-former.toml", "infinity-former"),
}


def pytorch(config, python):
    if config in SINGLE:
        driver, _, arch = SINGLE[config]
        command = [python, os.path.join(OURS, driver)]
    else:
        command = [python, os.path.join(PEERS, "lmrmt_cpu.py"), config]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            # "transformer-xl (cache 24) small" -> the memlab label
            model = arch if config in SINGLE else d["model"].rsplit(" ", 1)[0]
            rows[model] = (d["fwd_tok_s"], d["train_tok_s"])
    return rows


def bench_config(config):
    if config in SINGLE:
        return os.path.join(OURS, SINGLE[config][1])
    return os.path.join(PEERS, f"cpu-{config}.toml")


def memlab(binary, config, min_seconds):
    with tempfile.TemporaryDirectory() as out_dir:
        subprocess.run(
            [binary, "bench", "--config", bench_config(config),
             "--set", f"bench.out_dir={json.dumps(out_dir)}",
             "--set", f"bench.min_seconds={min_seconds}"],
            check=True, capture_output=True, text=True,
        )
        # The bench writes one folder, named by its config's bench.name.
        (name,) = os.listdir(out_dir)
        with open(os.path.join(out_dir, name, "bench.csv")) as f:
            return {r["model"]: (float(r["forward_tokens_per_s"]), float(r["train_tokens_per_s"]))
                    for r in csv.DictReader(f)}


def kind(model):
    """The architecture a label names: LM-RMT's and memlab's labels differ
    in their detail ("transformer-xl (mem 64)" against "transformer-xl")."""
    return model.split(" ", 1)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--memlab", action="append", required=True, metavar="LABEL=PATH",
                    help="a memlab binary to time (repeatable)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--min-seconds", type=float, default=3.0,
                    help="memlab bench's bench.min_seconds per cell")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", required=True, help="JSON lines, one per measurement, appended")
    ap.add_argument("--render", action="store_true",
                    help="print the tables of the measurements already in --out, run nothing")
    args = ap.parse_args()
    binaries = [m.split("=", 1) for m in args.memlab]
    configs = args.configs.split(",")

    results = []  # (round, config, who, model, fwd, train)
    if args.render:
        with open(args.out) as log:
            results = [json.loads(line) for line in log if line.strip()]
    else:
        measure(args, binaries, configs, results)
    render(args, binaries, configs, results)


def measure(args, binaries, configs, results):
    with open(args.out, "a") as log:
        for r in range(1, args.rounds + 1):
            for c in configs:
                runs = [("pytorch", lambda: pytorch(c, args.python))]
                runs += [(label, lambda p=path: memlab(p, c, args.min_seconds)) for label, path in binaries]
                for who, run in runs:
                    for model, (fwd, train) in run().items():
                        row = dict(round=r, config=c, who=who, model=model, fwd=fwd, train=train)
                        results.append(row)
                        log.write(json.dumps(row) + "\n")
                        log.flush()
                        print(json.dumps(row), file=sys.stderr)


def render(args, binaries, configs, results):
    rounds = max((x["round"] for x in results), default=0)

    def cell(c, who, model, key):
        return [x[key] for x in sorted(results, key=lambda x: x["round"])
                if x["config"] == c and x["who"] == who and kind(x["model"]) == kind(model)]

    for key, title in (("fwd", "forward"), ("train", "training step")):
        print(f"\n{title} tokens/s, rounds 1 / … / {rounds}\n")
        head = "| config | model | PyTorch |" + "".join(f" {l} | {l} ÷ PyTorch |" for l, _ in binaries)
        print(head)
        print("| --- | --- | ---: |" + " ---: | ---: |" * len(binaries))
        for c in configs:
            models = sorted({x["model"] for x in results if x["config"] == c and x["who"] == "pytorch"})
            for model in models:
                peer = cell(c, "pytorch", model, key)
                line = f"| {c} | {model} | {' / '.join(f'{v:,.0f}' for v in peer)} |"
                for label, _ in binaries:
                    ours = cell(c, label, model, key)
                    ratios = [o / p for o, p in zip(ours, peer)]
                    line += f" {' / '.join(f'{v:,.0f}' for v in ours)} | **{' / '.join(f'{x:.2f}' for x in ratios)}** |"
                print(line)


if __name__ == "__main__":
    main()
