"""Pretrain a GPT model on a text file: the course's main training job.

By default it trains GPT-2 small's architecture (context length 256) on Edith Wharton's *The Verdict* for 10
epochs, printing losses and a sample after every epoch, then saves the model (with its optimizer state, so
training can be continued) and a plot of the loss curves::

    python gpt_train.py                          # The Verdict, 10 epochs, output in ./output
    python gpt_train.py --text my_book.txt --epochs 20 --output-dir runs/my_book
    python gpt_train.py --test-mode              # a tiny model for one epoch: a smoke test in seconds
"""

import argparse
from dataclasses import replace
from pathlib import Path

import tiktoken
import torch

from pretraining import choose_device, create_train_val_loaders, plot_losses, save_checkpoint, train
from previous_chapters import GPT_CONFIG_124M, GPTModel, load_verdict

TRAINING_CONFIG = replace(GPT_CONFIG_124M, context_length=256)
TEST_CONFIG = replace(GPT_CONFIG_124M, context_length=128, emb_dim=16, n_heads=2, n_layers=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", type=Path, help="UTF-8 text file to train on (default: The Verdict)")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training text (default: 10)")
    parser.add_argument("--output-dir", type=Path, default=Path("output"),
                        help="where model.pth and loss.png are written (default: ./output)")
    parser.add_argument("--device", help="cpu, cuda, mps, ... (default: the fastest available)")
    parser.add_argument("--test-mode", action="store_true",
                        help="a tiny model trained for one epoch, to check that everything runs")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")

    if args.text is None:
        text = load_verdict(Path(__file__).with_name("the-verdict.txt"))
    elif not args.text.is_file():
        parser.error(f"--text: no such file: {args.text}")
    else:
        text = args.text.read_text(encoding="utf-8")
    cfg = TEST_CONFIG if args.test_mode else TRAINING_CONFIG
    epochs = 1 if args.test_mode else args.epochs
    device = torch.device(args.device) if args.device else choose_device()

    try:
        train_loader, val_loader = create_train_val_loaders(text, cfg.context_length, batch_size=2)
    except ValueError as e:
        parser.error(f"the text is too short to train on: {e}")
    if len(train_loader) == 0:
        parser.error("the text is too short to train on: its training part fills less than one batch")
    print(f"{len(train_loader)} training and {len(val_loader)} validation batches of 2 x {cfg.context_length} "
          f"tokens; training on {device}")

    torch.manual_seed(123)
    model = GPTModel(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    history = train(model, train_loader, val_loader, optimizer, device, num_epochs=epochs,
                    eval_freq=min(5, len(train_loader)), eval_iter=1 if args.test_mode else 5,
                    start_context="Every effort moves you", tokenizer=tiktoken.get_encoding("gpt2"),
                    sample_tokens=10 if args.test_mode else 50)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.output_dir / "model.pth", model, optimizer)
    plot_losses(history, args.output_dir / "loss.png")
    print(f"Saved {args.output_dir / 'model.pth'} and {args.output_dir / 'loss.png'}")


if __name__ == "__main__":
    main()
