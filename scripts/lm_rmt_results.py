#!/usr/bin/env python3
"""Writes docs/reproductions/lm-rmt-results/: the RMT paper's raw results.

booydar/LM-RMT publishes one row per training run of the paper in
experiment_results/*.csv. This script copies the rows and columns that
docs/reproductions.md quotes into small CSVs beside our own results, so
that `memlab report` generates the paper's tables from a file, as it does
ours. It changes no value:

- the columns kept are copied as the official file writes them;
- one column is added, `model`, read from two of them: `Tr-XL + RMT` where
  both `mem_len` and `num_mem_tokens` are above 0, `Tr-XL` where only
  `mem_len` is, `RMT` where only `num_mem_tokens` is, else `baseline`;
- rows whose result is empty (runs that did not finish) are left out, and
  so is a row equal in every column of the official file to an earlier
  one (the same run listed twice); the README written beside the CSVs
  counts both;
- rows are ordered for reading (task, segments, model, memory), each
  keeping its seed, so every row can be found in the official file.

The official code is not part of memlab: fetch booydar/LM-RMT and pass the
checkout (a folder holding experiment_results/) or its bare git directory:

    python3 scripts/lm_rmt_results.py --lm-rmt /path/to/LM-RMT \\
        --out docs/reproductions/lm-rmt-results

Needs Python 3 alone (csv from the standard library).
"""

import argparse
import csv
import io
import os
import subprocess
import sys

MODELS = ["baseline", "Tr-XL", "RMT", "Tr-XL + RMT"]

# (official file, our file, result column, columns kept, task column or
# None, the order of rows within a task)
FILES = [
    (
        "short_synthetic+MT.csv",
        "short_synthetic.csv",
        "test acc",
        [
            "dataset", "n_layer", "d_model", "max_step", "batch_size",
            "tgt_len", "n_chunks", "answer_size", "mem_len",
            "num_mem_tokens", "mem_size", "mem_backprop_depth", "seed",
            "test acc",
        ],
        "dataset",
        ["n_chunks", "model", "mem_size"],
    ),
    (
        "res_square_equations.csv",
        "square_equations.csv",
        "answer_acc",
        [
            "dataset", "n_layer", "d_model", "max_step", "batch_size",
            "tgt_len", "answer_size", "mem_len", "num_mem_tokens",
            "mem_backprop_depth", "seed", "answer_acc",
        ],
        None,
        ["model", "seed"],
    ),
    (
        "results_wt103_enwik8.csv",
        "wt103_enwik8.csv",
        None,  # `test ppl` for wt103, `test bpc` for enwik8
        [
            "dataset", "eval_tgt_len", "tgt_len", "mem_backprop_depth",
            "mem_len", "num_mem_tokens", "mem_at_end", "test ppl", "test bpc",
        ],
        "dataset",
        ["tgt_len", "model", "mem_backprop_depth", "mem_len", "num_mem_tokens"],
    ),
]

TASK_ORDER = ["copy", "reverse", "retrieval", "enwik8", "wt103"]


def read_official(root, name):
    """The official file's text, from a checkout or a bare git directory."""
    path = os.path.join(root, "experiment_results", name)
    if os.path.exists(path):
        with open(path, newline="") as f:
            return f.read()
    return subprocess.run(
        ["git", "--git-dir", root, "show", f"HEAD:experiment_results/{name}"],
        check=True, capture_output=True, text=True,
    ).stdout


def commit_of(root):
    for args in (["-C", root], ["--git-dir", root]):
        done = subprocess.run(["git", *args, "rev-parse", "HEAD"],
                              capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.strip()
    return "unknown"


def model_of(row):
    xl = float(row["mem_len"] or 0) > 0
    rmt = float(row["num_mem_tokens"] or 0) > 0
    return {(False, False): "baseline", (True, False): "Tr-XL",
            (False, True): "RMT", (True, True): "Tr-XL + RMT"}[(xl, rmt)]


def sort_key(row, task_column, order):
    key = []
    if task_column:
        key.append(TASK_ORDER.index(row[task_column]))
    for column in order:
        value = row[column]
        key.append(MODELS.index(value) if column == "model" else float(value))
    return key


def extract(text, result, columns, task_column, order):
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    missing = [c for c in columns if c not in header]
    if missing:
        sys.exit(f"the official file has no column {missing}")
    seen, rows, empty, twice = set(), [], 0, 0
    for record in reader:
        row = dict(zip(header, record))
        wanted = [result] if result else ["test ppl", "test bpc"]
        if not any(row[c].strip() for c in wanted):
            empty += 1
            continue
        if tuple(record) in seen:
            twice += 1
            continue
        seen.add(tuple(record))
        kept = {c: row[c] for c in columns}
        kept["model"] = model_of(row)
        rows.append(kept)
    rows.sort(key=lambda r: sort_key(r, task_column, order))  # stable
    return rows, empty, twice


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lm-rmt", required=True,
                   help="LM-RMT's checkout, or its bare git directory")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    commit = commit_of(args.lm_rmt)
    notes = []
    for official, ours, result, columns, task_column, order in FILES:
        rows, empty, twice = extract(read_official(args.lm_rmt, official),
                                     result, columns, task_column, order)
        with open(os.path.join(args.out, ours), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns + ["model"],
                                    lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        notes.append(f"| `{ours}` | `experiment_results/{official}` | "
                     f"{len(rows)} | {empty} | {twice} |")
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(README.format(commit=commit, rows="\n".join(notes)))


README = """# The RMT paper's raw results

The rows of booydar/LM-RMT's `experiment_results/` (commit `{commit}`)
that docs/reproductions.md quotes, one row per training run of the paper,
written by `scripts/lm_rmt_results.py` (its docstring says exactly what it
keeps and changes: columns copied as written, a `model` column read from
`mem_len` and `num_mem_tokens`, rows ordered for reading). Nothing here is
typed by hand; `memlab report` generates the doc's "paper's figures"
tables and figures from these files (`report: runs file=...`).

| file | from LM-RMT's | rows | left out: no result | left out: the same row twice |
| --- | --- | ---: | ---: | ---: |
{rows}

To make them again:

```sh
python3 scripts/lm_rmt_results.py --lm-rmt /path/to/LM-RMT \\
    --out docs/reproductions/lm-rmt-results
```
"""


if __name__ == "__main__":
    main()
