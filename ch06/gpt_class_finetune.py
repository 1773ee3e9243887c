"""Finetune pretrained GPT-2 to classify SMS messages as spam or not: the chapter's main job.

By default it does what the chapter does: GPT-2 124M with a new two-class head, the last transformer block and the
final norm trained for 5 epochs on the balanced SMS Spam Collection (AdamW, learning rate 5e-5, weight decay 0.1),
reading the last token's outputs. The options change one choice at a time::

    python gpt_class_finetune.py                                # the chapter's run; output in ./output
    python gpt_class_finetune.py --model-size 355M --trainable all
    python gpt_class_finetune.py --trainable 3 --token mean     # last 3 blocks; average over the message
    python gpt_class_finetune.py --context model                # pad every message to the model's 1,024 tokens
    python gpt_class_finetune.py --lora-rank 16                 # LoRA on every linear layer instead (lora.py)
    python gpt_class_finetune.py --test                         # a tiny random model on a few batches: seconds

It writes the finetuned model (``model.pth``, load it with ``classification.load_classifier``), ``metrics.json``
(settings, the training history and the final accuracies) and the plots ``loss.png`` and ``accuracy.png``.
"""

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import tiktoken
import torch
from torch.utils.data import Subset

from classification import (
    SPLITS,
    TOKEN_CHOICES,
    SpamDataset,
    add_classification_head,
    create_data_loaders,
    download_sms_spam,
    loader_accuracy,
    plot_curves,
    replace_atomically,
    save_classifier,
    train_classifier,
    write_splits,
)
from download import DownloadError
from gpt_download import GPT2_REPOS, load_gpt2
from lora import add_lora, count_parameters, merge_lora
from previous_chapters import GPTConfig, GPTModel, choose_device

# --test: a tiny random model (GPT-2's vocabulary, 2 blocks of width 16) on the first few messages of each split.
TEST_CONFIG = GPTConfig(context_length=256, emb_dim=16, n_heads=2, n_layers=2, qkv_bias=True, tie_embeddings=True)
TEST_MESSAGES = {"train": 64, "validation": 16, "test": 16}


def trainable_choice(value):
    """--trainable: "all" or a number of last transformer blocks."""
    if value == "all":
        return value
    if value.isdigit():
        return int(value)
    raise argparse.ArgumentTypeError(f"expected 'all' or a number of blocks, got {value!r}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-size", choices=list(GPT2_REPOS), default="124M", help="GPT-2 size (default: 124M)")
    parser.add_argument("--trainable", type=trainable_choice, default=None,
                        help="what trains besides the new head: 'all' (every parameter) or K, the last K "
                             "transformer blocks and the final norm (default: 1)")
    parser.add_argument("--token", choices=TOKEN_CHOICES, default="last",
                        help="which outputs classify: the last position, the first, or the mean over the message's "
                             "tokens (default: last)")
    parser.add_argument("--context", choices=["longest", "model"], default="longest",
                        help="pad messages to the longest training message or to the model's context length "
                             "(default: longest)")
    parser.add_argument("--lora-rank", type=int, default=0,
                        help="train LoRA matrices of this rank on every linear layer, plus the new head, instead "
                             "of unfreezing blocks (0 = no LoRA, the default)")
    parser.add_argument("--lora-alpha", type=float, default=None, help="LoRA's alpha (default: the rank)")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training messages (default: 5)")
    parser.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (default: 5e-5)")
    parser.add_argument("--seed", type=int, default=123,
                        help="seed of the head's initial weights and of the batch order; the data split always "
                             "uses the chapter's seed 123 so runs stay comparable (default: 123)")
    parser.add_argument("--data-dir", type=Path, default=Path("sms_spam"),
                        help="where the data is downloaded and split (default: ./sms_spam)")
    parser.add_argument("--output-dir", type=Path, default=Path("output"),
                        help="where model.pth, metrics.json and the plots go (default: ./output)")
    parser.add_argument("--device", help="cpu, cuda, mps, ... (default: the fastest available)")
    parser.add_argument("--test", action="store_true",
                        help="a tiny random model, one epoch on a few messages: checks that everything runs")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.lora_rank < 0:
        parser.error(f"--lora-rank must be 0 (off) or positive, got {args.lora_rank}")
    if args.lora_rank and args.trainable is not None:
        parser.error("--trainable and --lora-rank exclude each other: with LoRA only the LoRA matrices and the "
                     "new head train")
    return parser, args


def main(argv=None):
    parser, args = parse_args(argv)
    device = torch.device(args.device) if args.device else choose_device()
    tokenizer = tiktoken.get_encoding("gpt2")
    try:
        paths = write_splits(download_sms_spam(args.data_dir), args.data_dir)
    except (DownloadError, ValueError) as e:
        parser.exit(1, f"error: {e}\n")

    torch.manual_seed(args.seed)
    model = GPTModel(TEST_CONFIG) if args.test else load_gpt2(args.model_size)
    max_length = model.cfg.context_length if args.context == "model" else None
    train_dataset = SpamDataset(paths["train"], tokenizer, max_length)
    if train_dataset.max_length > model.cfg.context_length:
        parser.error(f"the longest training message has {train_dataset.max_length} tokens, more than the model's "
                     f"context length {model.cfg.context_length}; use --context model")
    datasets = [train_dataset] + [SpamDataset(paths[name], tokenizer, train_dataset.max_length) for name in SPLITS[1:]]
    if args.test:
        datasets = [Subset(dataset, range(TEST_MESSAGES[name])) for name, dataset in zip(SPLITS, datasets)]
    loaders = create_data_loaders(*datasets, batch_size=8, seed=args.seed)

    trainable_blocks = 0 if args.lora_rank else 1 if args.trainable is None else args.trainable
    try:
        add_classification_head(model, num_classes=2, trainable_blocks=trainable_blocks)
    except ValueError as e:
        parser.error(f"--trainable: {e}")
    if args.lora_rank:
        add_lora(model, rank=args.lora_rank, alpha=args.lora_alpha or args.lora_rank)
        model.out_head.linear.requires_grad_(True)  # the new head starts random: it trains in full
    model.to(device)
    trainable, total = count_parameters(model)
    print(f"{len(datasets[0])} training messages padded to {train_dataset.max_length} tokens; "
          f"{trainable:,} of {total:,} parameters train; training on {device}")

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.1)
    history = train_classifier(model, loaders[0], loaders[1], optimizer, device, num_epochs=1 if args.test else
                               args.epochs, eval_freq=2 if args.test else 50, eval_iter=1 if args.test else 5,
                               token=args.token)
    accuracy = {name: loader_accuracy(loader, model, device, token=args.token) for name, loader in zip(SPLITS, loaders)}
    print(", ".join(f"{name} accuracy {value:.1%}" for name, value in accuracy.items()))

    if args.lora_rank:
        merge_lora(model)  # plain linear layers again, so the saved model loads into a GPTModel
    args.output_dir.mkdir(parents=True, exist_ok=True)
    save_classifier(args.output_dir / "model.pth", model, train_dataset.max_length, args.token)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    metrics = {"settings": settings, "max_length": train_dataset.max_length, "trainable_parameters": trainable,
               "total_parameters": total, "accuracy": accuracy, "history": history}
    replace_atomically(args.output_dir / "metrics.json",
                       lambda partial: partial.write_text(json.dumps(metrics, indent=2), encoding="utf-8"))
    for metric, table in [("loss", history["evaluations"]), ("accuracy", history["epochs"])]:
        plt.close(plot_curves(table, metric, args.output_dir / f"{metric}.png"))
    print(f"Saved model.pth, metrics.json, loss.png and accuracy.png in {args.output_dir}")


if __name__ == "__main__":
    main()
