#!/usr/bin/env python3
"""Writes a small byte-level BPE tokenizer and what Hugging Face's own
`tokenizers` makes of a sample, for memlab's `kind = "bpe"` tests.

A GPT-2-style tokenizer (byte-level pre-tokenizer and decoder, BPE, no
normaliser) is trained with the `tokenizers` Python package on the first
200 kB of Tiny Shakespeare (`../shared/data/tinyshakespeare.txt`), with a
vocabulary of 400; it is saved as `tokenizer.json`, and `sample.json`
holds texts with the ids the package encodes them to and the text it
decodes those ids back to. Tests and CI read the files; they never run
this script and never download a tokenizer.

    python3 -m pip install tokenizers   # outside the repository
    python3 scripts/bpe_fixture.py --data ../shared/data --out crates/tasks/tests/bpe
"""

import argparse
import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SAMPLES = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "What's this? A naïve café, 3 ½ times — “quoted”.",
    "  leading spaces and\ttabs\n\n",
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    with open(os.path.join(args.data, "tinyshakespeare.txt"), encoding="utf-8") as f:
        text = f.read()[:200_000]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator([text], trainer)
    os.makedirs(args.out, exist_ok=True)
    tokenizer.save(os.path.join(args.out, "tokenizer.json"))
    samples = []
    for sample in SAMPLES:
        ids = tokenizer.encode(sample).ids
        samples.append({"text": sample, "ids": ids, "decoded": tokenizer.decode(ids)})
    with open(os.path.join(args.out, "sample.json"), "w", encoding="utf-8") as f:
        json.dump({"vocab_size": tokenizer.get_vocab_size(), "samples": samples}, f,
                  ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
