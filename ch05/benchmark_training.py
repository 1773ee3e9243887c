"""How fast does the course's GPTModel train, compared with Hugging Face's GPT2LMHeadModel?

Both models get the same configuration (GPT-2 small with the chapter's context length of 256, query/key/value
biases and an untied output head, so the parameter sets match one to one), the same starting weights (copied
from the Hugging Face model with chapter 4's load_gpt2_params), the same batch of 2 x 256 tokens, the same loss
and the same AdamW optimizer. After untimed warm-up steps, their training steps take turns in every round
(A B C A B C ...), so that a change in the machine's load slows all alike. The script prints a header saying
when, where and how it ran, each model's median step time with its spread (fastest and slowest step), and the
ratios of the median step times::

    python benchmark_training.py              # 124M, context 256, batch 2, 6 rounds
    python benchmark_training.py --steps 3    # quicker, noisier
    python benchmark_training.py --tiny       # a 2-block model of width 32: a quick run that checks the script

Hugging Face's model runs attention through PyTorch's fused ``scaled_dot_product_attention`` kernel by default
("sdpa"); it is also timed with its plain-PyTorch ("eager") attention, which does the same arithmetic as our
teaching implementation.
"""

import argparse
import statistics
import sys
from dataclasses import replace
from functools import partial

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

from benchmarking import describe_run, time_alternately
from pretraining import batch_loss
from previous_chapters import GPT_CONFIG_124M, GPTModel, load_gpt2_params

BENCHMARK_CONFIG = replace(GPT_CONFIG_124M, context_length=256, qkv_bias=True)
TINY_CONFIG = replace(BENCHMARK_CONFIG, vocab_size=1000, context_length=32, emb_dim=32, n_heads=2, n_layers=2)


def hf_model(cfg, attn_implementation):
    """Hugging Face's GPT-2 with the dimensions and dropout of ``cfg``."""
    config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
                        n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=cfg.drop_rate,
                        embd_pdrop=cfg.drop_rate, attn_pdrop=cfg.drop_rate, activation_function="gelu_new",
                        tie_word_embeddings=cfg.tie_embeddings, use_cache=False,
                        attn_implementation=attn_implementation)
    return GPT2LMHeadModel(config)


class LogitsOnly(torch.nn.Module):
    """Make a Hugging Face model return the logits tensor, as GPTModel does, so one loss function serves both."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, token_ids):
        return self.model(token_ids).logits


def training_step(model, optimizer, inputs, targets):
    """One optimizer step on one batch."""
    model.train()
    optimizer.zero_grad()
    batch_loss(inputs, targets, model, "cpu").backward()
    optimizer.step()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model, at least 3 (default: 6)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first (default: 2)")
    parser.add_argument("--batch-size", type=int, default=2, help="sequences per batch (default: 2)")
    parser.add_argument("--tiny", action="store_true", help="a 2-block model of width 32 (vocabulary 1000, context 32)")
    args = parser.parse_args(argv)
    if args.steps < 3:
        parser.error(f"--steps must be at least 3 (a median of fewer steps says little), got {args.steps}")
    if args.warmup < 0 or args.batch_size < 1:
        parser.error(f"--warmup must be at least 0 and --batch-size at least 1, got {args.warmup} and "
                     f"{args.batch_size}")
    cfg = TINY_CONFIG if args.tiny else BENCHMARK_CONFIG

    describe_run(__file__, argv, f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
                       f"transformers {transformers.__version__}")
    torch.manual_seed(123)
    hf_sdpa = hf_model(cfg, "sdpa")
    hf_eager = hf_model(cfg, "eager")
    hf_eager.load_state_dict(hf_sdpa.state_dict())
    ours = load_gpt2_params(GPTModel(cfg), hf_sdpa.state_dict())  # same starting weights in all three
    contenders = {"course": ours, "hf-sdpa": LogitsOnly(hf_sdpa), "hf-eager": LogitsOnly(hf_eager)}

    inputs = torch.randint(0, cfg.vocab_size, (args.batch_size, cfg.context_length))
    targets = torch.randint(0, cfg.vocab_size, (args.batch_size, cfg.context_length))
    print(f"configuration: {cfg}")
    print(f"batch {args.batch_size} x {cfg.context_length} tokens, AdamW(lr=4e-4, weight_decay=0.1), "
          f"{args.warmup} untimed steps, then the median of {args.steps} rounds")
    for name, model in contenders.items():
        with torch.no_grad():
            model.eval()
            loss = batch_loss(inputs, targets, model, "cpu").item()
        print(f"{name:9} {sum(p.numel() for p in model.parameters()):,} parameters, loss before training "
              f"{loss:.6f}")

    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
                  for name, model in contenders.items()}
    steps = {name: partial(training_step, model, optimizers[name], inputs, targets)
             for name, model in contenders.items()}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    seconds, _ = time_alternately(steps, args.steps)

    median = {name: statistics.median(runs) for name, runs in seconds.items()}
    for name, runs in seconds.items():
        print(f"{name:9} median step {median[name]:7.3f} s   (fastest-slowest {min(runs):.3f}-{max(runs):.3f} s)")
    for reference in ("hf-sdpa", "hf-eager"):
        print(f"ratio of median times, course / {reference}: {median['course'] / median[reference]:.2f}")


if __name__ == "__main__":
    main()
