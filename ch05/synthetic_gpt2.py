"""Write small GPT-2 checkpoints with random weights, in exactly the file formats OpenAI and Hugging Face publish.

The real GPT-2 weights cannot be fetched on the machines this course is tested on, so the tests (and the
notebooks CI runs) load these stand-ins through the very download and loading code a learner uses. The files are
laid out as a URL-addressed mirror (see download.py): the synthetic copy of
``https://openaipublic.blob.core.windows.net/gpt-2/models/124M/hparams.json`` is written to
``ROOT/openaipublic.blob.core.windows.net/gpt-2/models/124M/hparams.json``, and likewise for Hugging Face's
``model.safetensors`` and ``config.json``. With ``LLM_COURSE_MIRROR=ROOT`` set, ``load_gpt2`` finds them offline.

Each size gets its own small dimensions (so the sizes can be told apart) and the real 50,257-token vocabulary and
1,024-token context. Both formats of one size hold the same values. Every checkpoint is marked as synthetic (an
extra ``synthetic_stand_in`` entry in hparams.json, config.json and the safetensors metadata), and the loaders
print a "stand-in" warning whenever they load one.

OpenAI's format is written by TensorFlow itself, in a separate process (``tf_checkpoint.py write``), so the
course's own TensorFlow-free reader is tested against the real thing, and the process running the tests never
imports TensorFlow. Where TensorFlow is not installed (it publishes no wheels for the newest Python releases),
only the Hugging Face format is written. Usage::

    python synthetic_gpt2.py --mirror DIR [--sizes 124M 355M]
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from download import TIKTOKEN_GPT2_FILES, download, mirror_path
from gpt_download import GPT2_REPOS, STAND_IN_KEY, gpt2_urls

HERE = Path(__file__).resolve().parent
TENSORFLOW_AVAILABLE = importlib.util.find_spec("tensorflow") is not None
NO_TENSORFLOW = "writing OpenAI-format test checkpoints needs TensorFlow, which is not installed for this Python"

VOCAB_SIZE = 50257
CONTEXT_LENGTH = 1024

# Per size: (embedding width, attention heads, transformer blocks).
SYNTHETIC_DIMS = {"124M": (32, 2, 2), "355M": (48, 3, 3), "774M": (64, 4, 3), "1558M": (40, 5, 4)}

STAND_IN_NOTE = "random weights written by the course's synthetic_gpt2.py (a test fixture), not OpenAI's GPT-2"

# OpenAI ships its tokenizer's two BPE files beside every checkpoint; the synthetic ones carry the real files,
# fetched from where tiktoken downloads them.
BPE_FILES = {url.rsplit("/", 1)[1]: (url, sha256) for url, sha256 in TIKTOKEN_GPT2_FILES.items()}


def synthetic_hparams(size):
    """The hparams.json content of the synthetic checkpoint of ``size`` (OpenAI's keys plus the marker)."""
    n_embd, n_head, n_layer = SYNTHETIC_DIMS[size]
    return {"n_vocab": VOCAB_SIZE, "n_ctx": CONTEXT_LENGTH, "n_embd": n_embd, "n_head": n_head,
            "n_layer": n_layer, STAND_IN_KEY: STAND_IN_NOTE}


def hf_config(hparams):
    """A config.json like the one in openai-community/gpt2, with the synthetic dimensions and the marker."""
    return {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1, "layer_norm_epsilon": 1e-05,
        "initializer_range": 0.02, "bos_token_id": 50256, "eos_token_id": 50256,
        "vocab_size": hparams["n_vocab"], "n_ctx": hparams["n_ctx"], "n_positions": hparams["n_ctx"],
        "n_embd": hparams["n_embd"], "n_head": hparams["n_head"], "n_layer": hparams["n_layer"],
        STAND_IN_KEY: STAND_IN_NOTE,
    }


def tensor_layout(hparams):
    """Every GPT-2 parameter as (Hugging Face name, OpenAI name, shape in Hugging Face's layout).

    This table is written out by hand, independently of the loader's name conversion, so the tests check that
    conversion against the published naming rather than against itself. OpenAI stores each ``w`` with an extra
    leading dimension of 1, (1, in, out).
    """
    d, vocab, context = hparams["n_embd"], hparams["n_vocab"], hparams["n_ctx"]
    layout = [("wte.weight", "model/wte", (vocab, d)), ("wpe.weight", "model/wpe", (context, d))]
    for i in range(hparams["n_layer"]):
        hf, openai = f"h.{i}.", f"model/h{i}/"
        layout += [
            (hf + "ln_1.weight", openai + "ln_1/g", (d,)),
            (hf + "ln_1.bias", openai + "ln_1/b", (d,)),
            (hf + "attn.c_attn.weight", openai + "attn/c_attn/w", (d, 3 * d)),
            (hf + "attn.c_attn.bias", openai + "attn/c_attn/b", (3 * d,)),
            (hf + "attn.c_proj.weight", openai + "attn/c_proj/w", (d, d)),
            (hf + "attn.c_proj.bias", openai + "attn/c_proj/b", (d,)),
            (hf + "ln_2.weight", openai + "ln_2/g", (d,)),
            (hf + "ln_2.bias", openai + "ln_2/b", (d,)),
            (hf + "mlp.c_fc.weight", openai + "mlp/c_fc/w", (d, 4 * d)),
            (hf + "mlp.c_fc.bias", openai + "mlp/c_fc/b", (4 * d,)),
            (hf + "mlp.c_proj.weight", openai + "mlp/c_proj/w", (4 * d, d)),
            (hf + "mlp.c_proj.bias", openai + "mlp/c_proj/b", (d,)),
        ]
    layout += [("ln_f.weight", "model/ln_f/g", (d,)), ("ln_f.bias", "model/ln_f/b", (d,))]
    return layout


def random_params(hparams, seed=123):
    """Random float32 weights keyed by Hugging Face name.

    The scales are far larger than a trained model's so that every tensor visibly changes the logits: a
    loader that swapped, transposed or dropped one would be caught by a comparison of outputs.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, _, shape in tensor_layout(hparams):
        if name in ("wte.weight", "wpe.weight"):
            value = 0.2 * rng.standard_normal(shape)
        elif name.endswith("bias"):
            value = 0.1 * rng.standard_normal(shape)
        elif ".ln_" in name or name.startswith("ln_"):  # LayerNorm scales stay near 1
            value = 1 + 0.1 * rng.standard_normal(shape)
        else:
            value = 0.2 * rng.standard_normal(shape)
        params[name] = value.astype(np.float32)
    return params


def write_openai_checkpoints(checkpoints):
    """For each (folder, hparams, params): hparams.json and a TF1 checkpoint (checkpoint, model.ckpt.*).

    TensorFlow writes the checkpoints, all in one child process; OpenAI stores each ``w`` as (1, in, out).
    """
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, str(HERE / "tf_checkpoint.py"), "write"]
        for i, (folder, hparams, params) in enumerate(checkpoints):
            Path(folder).mkdir(parents=True, exist_ok=True)
            arrays = {openai: params[hf][None] if openai.endswith("/w") else params[hf]
                      for hf, openai, _ in tensor_layout(hparams)}
            np.savez(Path(scratch, f"{i}.npz"), **arrays)
            command += [str(Path(scratch, f"{i}.npz")), str(Path(folder) / "model.ckpt")]
        result = subprocess.run(command, capture_output=True, text=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode != 0:
        raise RuntimeError(f"TensorFlow could not write the checkpoints:\n{result.stderr[-2000:]}")
    for folder, hparams, _ in checkpoints:
        (Path(folder) / "hparams.json").write_text(json.dumps(hparams, indent=2), encoding="utf-8")


def write_hf_checkpoint(folder, hparams, params):
    """Write config.json and model.safetensors with the key set of openai-community/gpt2's file.

    That file has no "transformer." prefix and no "lm_head.weight" (the head is tied to wte), and it also stores
    each block's causal-mask buffer "h.N.attn.bias", a float32 lower-triangular matrix of ones of shape
    (1, 1, n_ctx, n_ctx).
    """
    from safetensors.numpy import save_file

    n_ctx = hparams["n_ctx"]
    mask = np.tril(np.ones((n_ctx, n_ctx), dtype=np.float32)).reshape(1, 1, n_ctx, n_ctx)
    tensors = dict(params)
    tensors.update({f"h.{i}.attn.bias": mask for i in range(hparams["n_layer"])})
    save_file(tensors, str(Path(folder) / "model.safetensors"), metadata={"format": "pt", STAND_IN_KEY: STAND_IN_NOTE})
    (Path(folder) / "config.json").write_text(json.dumps(hf_config(hparams), indent=2), encoding="utf-8")


def build_mirror(root, sizes=tuple(GPT2_REPOS), seed=123):
    """Write synthetic checkpoints of ``sizes`` in both formats into the mirror ``root``; return ``root``.

    Existing files are never overwritten (they might be real weights). Everything is written into a temporary
    folder inside ``root`` first and moved into place only when complete.
    """
    root = Path(root)
    sizes = list(dict.fromkeys(sizes))
    sources = ["hf", "openai"] if TENSORFLOW_AVAILABLE else ["hf"]
    urls = [url for size in sizes for source in sources for url in gpt2_urls(size, source).values()]
    existing = [str(mirror_path(root, url)) for url in urls if mirror_path(root, url).exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing files (they may be real weights): {existing}")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".synthetic-gpt2-"))  # laid out like a mirror itself
    try:
        bpe_files = {file: download(url, staging / file, sha256=sha256) for file, (url, sha256) in BPE_FILES.items()}
        openai_checkpoints = []
        for size in sizes:
            hparams = synthetic_hparams(size)
            params = random_params(hparams, seed)
            hf_folder = mirror_path(staging, gpt2_urls(size, "hf")["config.json"]).parent
            hf_folder.mkdir(parents=True)
            write_hf_checkpoint(hf_folder, hparams, params)
            if "openai" in sources:
                openai_folder = mirror_path(staging, gpt2_urls(size, "openai")["hparams.json"]).parent
                openai_checkpoints.append((openai_folder, hparams, params))
                openai_folder.mkdir(parents=True)
                for file, path in bpe_files.items():
                    shutil.copyfile(path, openai_folder / file)
        if openai_checkpoints:
            write_openai_checkpoints(openai_checkpoints)
        for url in urls:
            mirror_path(root, url).parent.mkdir(parents=True, exist_ok=True)
            os.replace(mirror_path(staging, url), mirror_path(root, url))
    finally:
        shutil.rmtree(staging)
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror", required=True, help="mirror root to write into (use it as LLM_COURSE_MIRROR)")
    parser.add_argument("--sizes", nargs="+", default=list(GPT2_REPOS), choices=list(GPT2_REPOS),
                        help="GPT-2 sizes to write (default: all)")
    parser.add_argument("--seed", type=int, default=123, help="seed of the random weights")
    args = parser.parse_args(argv)
    try:
        build_mirror(args.mirror, args.sizes, args.seed)
    except FileExistsError as e:
        parser.error(str(e))
    formats = "both formats" if TENSORFLOW_AVAILABLE else f"Hugging Face format only ({NO_TENSORFLOW})"
    print(f"synthetic GPT-2 checkpoints ({', '.join(args.sizes)}; {formats}) written to the mirror {args.mirror}")


if __name__ == "__main__":
    main()
