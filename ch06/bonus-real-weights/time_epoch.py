"""Time one training epoch of the SmolLM2 spam classifier with and without the cache of the frozen blocks.

    python time_epoch.py                  # cached: a whole epoch; uncached: 10 steps, scaled to an epoch
    python time_epoch.py --uncached-steps 0    # all steps of the epoch without the cache too (takes long)

Measure on an otherwise idle machine: the load average is printed beside every figure. The classifier is
chapter 6's (last block, final norm and a new head trainable), on the 1,045 training messages in batches of 8.
"""

import argparse
import copy
import os
import time

import torch

from llama import load_gguf, smollm2_path
from previous_chapters import SpamDataset, download_sms_spam, write_splits
from spam_smollm2 import (
    PAD_TOKEN,
    cached_logits,
    frozen_states,
    full_logits,
    length_batches,
    make_classifier,
    time_steps,
    unpadded_messages,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uncached-steps", type=int, default=10,
                        help="training steps timed without the cache (0: the whole epoch)")
    parser.add_argument("--trainable-blocks", type=int, default=1)
    args = parser.parse_args(argv)
    if args.uncached_steps < 0:
        parser.error("--uncached-steps must be 0 or more")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"load average at the start {os.getloadavg()[0]:.1f}")
    base, tokenizer = load_gguf(smollm2_path())
    pad_id = tokenizer.backend.token_to_id(PAD_TOKEN)
    paths = write_splits(download_sms_spam("sms_spam"), "sms_spam")
    messages, labels = unpadded_messages(SpamDataset(paths["train"], tokenizer, pad_token_id=pad_id), pad_id)
    batches = length_batches([len(m) for m in messages], 8, torch.Generator().manual_seed(0))

    model = copy.deepcopy(base)
    first_block = make_classifier(model, args.trainable_blocks)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    states = frozen_states(model, messages, first_block)
    print(f"frozen blocks, once for {len(messages)} messages: {time.perf_counter() - start:.1f} s "
          f"(load average {load:.1f} -> {os.getloadavg()[0]:.1f})")
    seconds, load = time_steps(cached_logits(model, states, first_block), labels, batches, model)
    print(f"with the cache: {seconds * len(batches):.1f} s per epoch of {len(batches)} steps "
          f"(load average {load[0]:.1f} -> {load[1]:.1f})")

    model = copy.deepcopy(base)  # a fresh classifier: the cached steps above changed the first one
    make_classifier(model, args.trainable_blocks)
    steps = args.uncached_steps or len(batches)
    seconds, load = time_steps(full_logits(model, messages, pad_id), labels, batches[:steps], model)
    print(f"without the cache: {seconds:.2f} s per step over {steps} steps -> {seconds * len(batches):.1f} s per "
          f"epoch (load average {load[0]:.1f} -> {load[1]:.1f})")


if __name__ == "__main__":
    main()
