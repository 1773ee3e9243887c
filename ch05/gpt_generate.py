"""Generate text with OpenAI's pretrained GPT-2 or with a model saved by gpt_train.py.

    python gpt_generate.py --prompt "Every effort moves you"                 # GPT-2 small (124M)
    python gpt_generate.py --size 355M --source hf --temperature 0.8 --top-k 40
    python gpt_generate.py --checkpoint output/model.pth --max-new-tokens 30

Temperature 0 (the default) is greedy decoding, so the output is the same on every run; with a positive
temperature the output depends on --seed.
"""

import argparse
from pathlib import Path

import tiktoken
import torch

from gpt_download import GPT2_REPOS, MODELS_DIR_ENV, SOURCES, load_gpt2
from pretraining import choose_device, generate, load_checkpoint, text_to_token_ids, token_ids_to_text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--size", choices=list(GPT2_REPOS), default="124M",
                         help="pretrained GPT-2 size (default: 124M)")
    weights.add_argument("--checkpoint", type=Path, help="a model.pth written by gpt_train.py instead")
    parser.add_argument("--source", choices=SOURCES, default="hf",
                        help="where the GPT-2 weights come from: Hugging Face's safetensors file or OpenAI's "
                             "TensorFlow checkpoint (default: hf)")
    parser.add_argument("--models-dir", type=Path,
                        help=f"download folder (default: ${MODELS_DIR_ENV}, or ./gpt2 when it is not set)")
    parser.add_argument("--prompt", default="Every effort moves you", help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=25, help="tokens to generate (default: 25)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; higher = more random")
    parser.add_argument("--top-k", type=int, help="sample only from the k most likely tokens")
    parser.add_argument("--seed", type=int, default=123, help="random seed for sampling (default: 123)")
    parser.add_argument("--device", help="cpu, cuda, mps, ... (default: the fastest available)")
    args = parser.parse_args(argv)
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        parser.error(f"--temperature must be 0 or positive, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top-k must be at least 1, got {args.top_k}")

    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            parser.error(f"--checkpoint: no such file: {args.checkpoint}")
        model = load_checkpoint(args.checkpoint).eval()
    else:
        model = load_gpt2(args.size, args.source, args.models_dir)
    if args.top_k is not None and args.top_k > model.cfg.vocab_size:
        parser.error(f"--top-k must be at most the vocabulary size {model.cfg.vocab_size}, got {args.top_k}")
    device = torch.device(args.device) if args.device else choose_device()
    model.to(device)

    tokenizer = tiktoken.get_encoding("gpt2")
    prompt = text_to_token_ids(args.prompt, tokenizer).to(device)
    torch.manual_seed(args.seed)
    token_ids = generate(model, prompt, args.max_new_tokens, model.cfg.context_length,
                         temperature=args.temperature, top_k=args.top_k, eos_id=tokenizer.eot_token)
    print(token_ids_to_text(token_ids, tokenizer))


if __name__ == "__main__":
    main()
