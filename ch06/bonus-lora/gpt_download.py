"""Download OpenAI's pretrained GPT-2 weights and load them into the GPTModel built in chapter 4.

Two published copies of the same weights can be used:

* ``source="hf"`` (the default): the ``model.safetensors`` file on the Hugging Face Hub, read with the
  ``safetensors`` package. A safetensors file holds only tensors and cannot run code.
* ``source="openai"``: OpenAI's original TensorFlow checkpoint (seven files per model size), read by the
  course's own reader in ``tf_checkpoint.py`` with NumPy alone: no TensorFlow needed.

Both are converted to the tensor names of Hugging Face's GPT-2 (``h.0.attn.c_attn.weight``, ...) and handed to
``load_gpt2_params``, which checks every shape. Both readers map the files into memory instead of reading them,
so a model of any size is held in memory once, in the model itself. The model's configuration is read from the
checkpoint's own hyperparameter file, so every GPT-2 size, and the small synthetic checkpoints the tests use,
load by the same code. Usage::

    model = load_gpt2("124M")                   # downloads into gpt2/124M, returns a GPTModel in eval mode
    model = load_gpt2("355M", source="openai")

Checkpoints are stored in ``gpt2/`` in the current folder, or in the folder named by the environment variable
``LLM_COURSE_GPT2_DIR`` (handy to share one download between chapters).
"""

import json
import os
import re
from pathlib import Path

from download import download, sha256_of
from previous_chapters import GPTConfig, GPTModel, load_gpt2_params
from tf_checkpoint import CheckpointError, read_checkpoint

# OpenAI's size names -> the matching Hugging Face repository under openai-community/
GPT2_REPOS = {"124M": "gpt2", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}

OPENAI_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models/{size}/{file}"
OPENAI_FILES = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
                "model.ckpt.index", "model.ckpt.meta", "vocab.bpe")
HF_URL = "https://huggingface.co/openai-community/{repo}/resolve/main/{file}"
HF_FILES = ("config.json", "model.safetensors")
SOURCES = ("hf", "openai")
MODELS_DIR_ENV = "LLM_COURSE_GPT2_DIR"

# sha256 of model.safetensors as published by the Hugging Face Hub (the file's Git LFS object id), at the
# revision 607a30d783dfa663caf39e06633721c8d4cfcd7e of openai-community/gpt2 (548,105,171 bytes). OpenAI publishes
# no digests; digests of the other sizes can be added here from each repository's file page.
HF_SHA256 = {"124M": "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"}

# The course's synthetic test checkpoints (synthetic_gpt2.py) carry this key in hparams.json / config.json and
# in the safetensors metadata; real checkpoints never do.
STAND_IN_KEY = "synthetic_stand_in"


class CorruptCheckpointError(ValueError):
    """A downloaded checkpoint file is truncated, corrupt or not the published file."""


def default_models_dir():
    """Where checkpoints are stored: $LLM_COURSE_GPT2_DIR, or gpt2/ in the current folder."""
    return Path(os.environ.get(MODELS_DIR_ENV) or "gpt2")


def gpt2_urls(size="124M", source="hf"):
    """Map each file name of a GPT-2 checkpoint to its canonical URL."""
    if size not in GPT2_REPOS:
        raise ValueError(f"unknown GPT-2 size {size!r}; choose one of {', '.join(GPT2_REPOS)}")
    if source == "openai":
        return {file: OPENAI_URL.format(size=size, file=file) for file in OPENAI_FILES}
    if source == "hf":
        return {file: HF_URL.format(repo=GPT2_REPOS[size], file=file) for file in HF_FILES}
    raise ValueError(f"unknown weights source {source!r}; choose one of {', '.join(SOURCES)}")


def download_gpt2(size="124M", source="hf", models_dir=None):
    """Download (or copy from a mirror) the checkpoint files of one GPT-2 size into ``models_dir/size``.

    Files already there are kept; ``read_hf_safetensors`` verifies the published digest when it reads them.
    """
    urls = gpt2_urls(size, source)
    folder = Path(models_dir or default_models_dir()) / size
    for file, url in urls.items():
        download(url, folder / file)
    return folder


def read_json(path, required):
    """Load a JSON object from ``path`` and check that it has every key in ``required``."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    missing = [key for key in required if key not in values]
    if missing:
        raise ValueError(f"{path} lacks the entries {missing}")
    return values


def openai_to_hf_name(name):
    """'model/h0/attn/c_attn/w' -> 'h.0.attn.c_attn.weight', 'model/wte' -> 'wte.weight', ..."""
    name = re.sub(r"^h(\d+)/", r"h.\1/", name.removeprefix("model/"))
    *path, leaf = name.split("/")
    if not path:  # the embeddings wte and wpe have no sub-name
        return f"{leaf}.weight"
    # OpenAI calls LayerNorm's scale g and its shift b, and linear (conv1d) weights w and biases b.
    return ".".join(path + [{"w": "weight", "g": "weight", "b": "bias"}[leaf]])


def read_openai_checkpoint(folder):
    """Read OpenAI's TensorFlow GPT-2 checkpoint in ``folder``; return (params with HF names, hparams)."""
    folder = Path(folder)
    hparams = read_json(folder / "hparams.json", ["n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"])
    # The text file 'checkpoint' names the latest checkpoint: model_checkpoint_path: "model.ckpt"
    latest = re.search(r'^model_checkpoint_path: "([^"]+)"', (folder / "checkpoint").read_text(), re.M)
    if latest is None:
        raise CorruptCheckpointError(f"{folder / 'checkpoint'} names no checkpoint; delete {folder} and download "
                                     "it again")
    checkpoint = folder / latest.group(1)
    try:
        tensors = read_checkpoint(checkpoint)
    except CheckpointError as e:
        raise CorruptCheckpointError(str(e)) from e
    params = {}
    for name, value in tensors.items():
        if name.endswith("/w"):  # conv1d weights are stored as (1, in, out)
            if value.ndim != 3 or value.shape[0] != 1:
                raise ValueError(f"{checkpoint}: tensor '{name}' has shape {value.shape}, expected (1, in, out)")
            value = value[0]
        params[openai_to_hf_name(name)] = value
    return params, hparams


def read_hf_safetensors(folder, size=None):
    """Read Hugging Face's GPT-2 model.safetensors and config.json in ``folder``; return (params, hparams).

    The hyperparameters are returned under OpenAI's hparams.json names so both sources are handled alike. When a
    digest of ``size``'s file is published (``HF_SHA256``), a real (not stand-in) file must match it.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / "model.safetensors"
    config = read_json(folder / "config.json", ["vocab_size", "n_positions", "n_embd", "n_head", "n_layer"])
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        params = load_file(path)  # memory-mapped: tensors are read from the file when used
    except (SafetensorError, OSError) as e:
        raise CorruptCheckpointError(f"{path} is truncated or corrupt ({e}); delete it and download it again") from e
    hparams = {"n_vocab": config["vocab_size"], "n_ctx": config["n_positions"], "n_embd": config["n_embd"],
               "n_head": config["n_head"], "n_layer": config["n_layer"]}
    stand_in = config.get(STAND_IN_KEY) or metadata.get(STAND_IN_KEY)
    if stand_in:
        hparams[STAND_IN_KEY] = stand_in
    elif size in HF_SHA256 and sha256_of(path) != HF_SHA256[size]:
        raise CorruptCheckpointError(f"{path} is not the published GPT-2 {size} file (its sha256 differs from "
                                     f"{HF_SHA256[size]}); delete it and download it again")
    # Besides the parameters the file holds each block's causal-mask buffer "h.N.attn.bias"; it is not
    # looked up, since GPTModel builds its own mask.
    return params, hparams


def gpt2_config(hparams, drop_rate=0.0):
    """The GPTConfig described by a checkpoint's hyperparameters (OpenAI's hparams.json names)."""
    return GPTConfig(vocab_size=hparams["n_vocab"], context_length=hparams["n_ctx"], emb_dim=hparams["n_embd"],
                     n_heads=hparams["n_head"], n_layers=hparams["n_layer"], drop_rate=drop_rate,
                     qkv_bias=True, tie_embeddings=True)


def load_gpt2(size="124M", source="hf", models_dir=None, drop_rate=0.0):
    """Download GPT-2 weights of one size from ``source`` ("hf" or "openai") and return them in a GPTModel.

    The model is in eval mode; its output head is tied to the token embedding, as in GPT-2.
    """
    folder = download_gpt2(size, source, models_dir)
    if source == "openai":
        params, hparams = read_openai_checkpoint(folder)
    else:
        params, hparams = read_hf_safetensors(folder, size)
    model = GPTModel(gpt2_config(hparams, drop_rate))
    try:
        load_gpt2_params(model, params)
    except (KeyError, ValueError) as e:
        if source == "openai":
            where = ("its hparams.json (tensors are named as in Hugging Face's GPT-2: "
                     "OpenAI's 'model/h0/attn/c_attn/w' is 'h.0.attn.c_attn.weight')")
        else:
            where = "its config.json"
        raise ValueError(f"the GPT-2 checkpoint in {folder} does not match {where}: {e.args[0]}") from e
    if hparams.get(STAND_IN_KEY):
        print(f"Loaded synthetic stand-in weights (test fixture) for GPT-2 {size} from {folder}: generated text "
              f"is meaningless. Outside the course's tests, delete {folder} and make sure {MODELS_DIR_ENV} and "
              "LLM_COURSE_MIRROR do not point at a folder of synthetic checkpoints.")
    return model.eval()
