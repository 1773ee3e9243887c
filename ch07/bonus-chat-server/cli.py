"""The command-line options the server and the pages share: which models to load, and where to listen."""

import ipaddress
import pickle
import sys
from pathlib import Path

from engine import CH05_GPT, CH07_GPT, SMOLLM2, gpt_backend, smollm2_backend


def add_model_arguments(parser):
    parser.add_argument("--no-smollm2", action="store_true",
                        help=f"do not load SmolLM2-135M-Instruct (served as '{SMOLLM2}' by default)")
    parser.add_argument("--ch05", type=Path, metavar="MODEL_PTH",
                        help=f"serve chapter 5's pretrained model from this file (gpt_train.py's output/model.pth) "
                             f"as '{CH05_GPT}' (text completion)")
    parser.add_argument("--ch07", type=Path, metavar="MODEL_PTH",
                        help=f"serve chapter 7's instruction-finetuned model from this file "
                             f"(gpt_instruction_finetuning.py's gpt2-*-sft.pth) as '{CH07_GPT}'")


def load_backends(parser, args):
    """{name: Backend} for the models the options ask for; a missing or unreadable file ends with its name."""
    backends = {}
    try:
        if not args.no_smollm2:
            backends[SMOLLM2] = smollm2_backend()
        for path, name, instruct in [(args.ch05, CH05_GPT, False), (args.ch07, CH07_GPT, True)]:
            if path is not None:
                backends[name] = gpt_backend(path, name, instruct)
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as e:
        parser.error(f"could not load the model: {load_problem(e)}")
    if not backends:
        parser.error("no model to serve: drop --no-smollm2 or give --ch05 / --ch07")
    return backends


def load_problem(error):
    """What went wrong when loading a model file, in one line."""
    if isinstance(error, pickle.UnpicklingError):  # torch.load(weights_only=True) refused the file's contents
        return "the file is not a PyTorch checkpoint of plain tensors, as the course's scripts write"
    return str(error).splitlines()[0]


def add_address_arguments(parser, port):
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this computer only)")
    parser.add_argument("--port", type=int, default=port, help=f"port to listen on (default: {port})")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a --host other than a loopback address, which lets other computers connect")


def checked_host(parser, args):
    """``args.host``, refused unless it is a loopback address or --allow-remote is given (then with a warning)."""
    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        if not args.allow_remote:
            parser.error(f"--host {args.host} would let other computers connect; add --allow-remote if you mean it")
        print(f"WARNING: listening on {args.host}: anyone who can reach this computer can use the models, and "
              "there is no authentication.", file=sys.stderr)
    return args.host
