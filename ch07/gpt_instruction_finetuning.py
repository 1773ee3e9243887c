"""Finetune a pretrained GPT-2 to follow instructions: the course's chapter-7 main job.

Loads GPT-2 medium (355M) with chapter 5's loader, finetunes it on the 935 training entries of the instruction
data set for 2 epochs (AdamW, learning rate 5e-5, weight decay 0.1, batches of 8), printing losses and the
model's answer to a validation entry, then writes its answers to the 110 test entries, the finetuned model and a
plot of the losses::

    python gpt_instruction_finetuning.py                      # GPT-2 355M, output in ./output
    python gpt_instruction_finetuning.py --size 124M --device cuda
    python gpt_instruction_finetuning.py --test               # a tiny random model on a few entries, in seconds
"""

import argparse
import time
from pathlib import Path

import tiktoken
import torch

from gpt_download import GPT2_REPOS, SOURCES, load_gpt2
from instruction_finetuning import (
    InstructionDataError,
    create_instruction_loader,
    format_prompt,
    generate_responses,
    load_instruction_data,
    read_entries,
    save_json,
    split_data,
)
from previous_chapters import GPTConfig, GPTModel, choose_device, evaluate, plot_losses, save_checkpoint, train

# --test: a tiny randomly initialised model with GPT-2's vocabulary, and only the first few entries of each split
TEST_CONFIG = GPTConfig(emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0, qkv_bias=True, tie_embeddings=True)
TEST_ENTRIES = {"train": 16, "validation": 8, "test": 3}
BATCH_SIZE = 8
RESPONSES_FILE = "model-responses.json"
DATA_PATH = Path(__file__).with_name("instruction-data.json")  # where the course's data set is downloaded


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(GPT2_REPOS), default="355M", help="GPT-2 size (default: 355M)")
    parser.add_argument("--source", choices=SOURCES, default="hf",
                        help="hf: Hugging Face's safetensors file (default); openai: OpenAI's checkpoint")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the training entries (default: 2)")
    parser.add_argument("--data", type=Path,
                        help="a JSON list of your own entries (instruction, input, output) to use instead of the "
                        "course's data set")
    parser.add_argument("--output-dir", type=Path, default=Path("output"),
                        help=f"where the model, {RESPONSES_FILE} and loss.png are written (default: ./output)")
    parser.add_argument("--device", help="cpu, cuda, mps, ... (default: the fastest available)")
    parser.add_argument("--test", action="store_true",
                        help="a tiny random model, one epoch on a few entries: checks that everything runs")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    device = torch.device(args.device) if args.device else choose_device()
    start = time.perf_counter()

    if args.data is not None and not args.data.is_file():
        parser.error(f"--data: no such file: {args.data}")
    try:
        entries = read_entries(args.data) if args.data else load_instruction_data(DATA_PATH)
    except InstructionDataError as e:
        parser.error(str(e))
    train_data, test_data, val_data = split_data(entries)
    if len(train_data) < BATCH_SIZE or not val_data or not test_data:
        parser.error(f"too few entries ({len(entries)}): the training split (85 %) must fill a batch of "
                     f"{BATCH_SIZE}, and the test and validation splits (10 % and the rest) need one entry each")
    if args.test:
        train_data = train_data[:TEST_ENTRIES["train"]]
        val_data = val_data[:TEST_ENTRIES["validation"]]
        test_data = test_data[:TEST_ENTRIES["test"]]
    print(f"{len(train_data)} training, {len(val_data)} validation and {len(test_data)} test entries")

    torch.manual_seed(123)
    model = GPTModel(TEST_CONFIG) if args.test else load_gpt2(args.size, args.source)
    model.to(device)
    tokenizer = tiktoken.get_encoding("gpt2")
    loader_options = {"tokenizer": tokenizer, "batch_size": BATCH_SIZE, "device": device,
                      "allowed_max_length": model.cfg.context_length}
    train_loader = create_instruction_loader(train_data, shuffle=True, drop_last=True, **loader_options)
    val_loader = create_instruction_loader(val_data, **loader_options)
    train_loss, val_loss = evaluate(model, train_loader, val_loader, device, num_batches=5)
    print(f"before finetuning: training loss {train_loss:.3f}, validation loss {val_loss:.3f}; training on {device}")

    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
    epochs = 1 if args.test else args.epochs
    history = train(model, train_loader, val_loader, optimizer, device, num_epochs=epochs, eval_freq=5,
                    eval_iter=5, start_context=format_prompt(val_data[0]), tokenizer=tokenizer,
                    sample_tokens=10 if args.test else 50)

    responses = generate_responses(model, test_data, tokenizer, device, max_new_tokens=8 if args.test else 256)
    name = "test" if args.test else args.size
    paths = [save_json(responses, args.output_dir / RESPONSES_FILE), args.output_dir / f"gpt2-{name}-sft.pth",
             args.output_dir / "loss.png"]
    save_checkpoint(paths[1], model)
    plot_losses(history, paths[2])
    print(f"Saved {', '.join(map(str, paths))} ({(time.perf_counter() - start) / 60:.1f} min in all)")


if __name__ == "__main__":
    main()
