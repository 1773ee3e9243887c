"""Download OpenAI's pretrained GPT-2 weights and load them into the GPTModel built in chapter 4.

Two published copies of the same weights can be used:

* ``source="openai"``: OpenAI's original TensorFlow checkpoint (seven files per model size). Reading it needs
  the ``tensorflow`` package, which is imported only when this source is used.
* ``source="hf"``: the ``model.safetensors`` file on the Hugging Face Hub, read with the ``safetensors``
  package (no TensorFlow, and no pickle: a safetensors file holds only tensors and cannot run code).

Both are converted to the tensor names of Hugging Face's GPT-2 (``h.0.attn.c_attn.weight``, ...) and handed to
``load_gpt2_params``, which checks every shape. The model's configuration is read from the checkpoint's own
hyperparameter file, so every GPT-2 size, and the small synthetic checkpoints the tests use, load by the same
code. Usage::

    model = load_gpt2("124M")               # downloads into gpt2/124M, returns a GPTModel in eval mode
    model = load_gpt2("355M", source="hf")
"""

import json
import os
import re
from pathlib import Path

from download import download
from previous_chapters import GPTConfig, GPTModel, load_gpt2_params

# OpenAI's size names -> the matching Hugging Face repository under openai-community/
GPT2_REPOS = {"124M": "gpt2", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}

OPENAI_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models/{size}/{file}"
OPENAI_FILES = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
                "model.ckpt.index", "model.ckpt.meta", "vocab.bpe")
HF_URL = "https://huggingface.co/openai-community/{repo}/resolve/main/{file}"
HF_FILES = ("config.json", "model.safetensors")
SOURCES = ("openai", "hf")

# The course's synthetic test checkpoints (synthetic_gpt2.py) carry this key in hparams.json / config.json and
# in the safetensors metadata; real checkpoints never do.
STAND_IN_KEY = "synthetic_stand_in"


def gpt2_urls(size="124M", source="openai"):
    """Map each file name of a GPT-2 checkpoint to its canonical URL."""
    if size not in GPT2_REPOS:
        raise ValueError(f"unknown GPT-2 size {size!r}; choose one of {', '.join(GPT2_REPOS)}")
    if source == "openai":
        return {file: OPENAI_URL.format(size=size, file=file) for file in OPENAI_FILES}
    if source == "hf":
        return {file: HF_URL.format(repo=GPT2_REPOS[size], file=file) for file in HF_FILES}
    raise ValueError(f"unknown weights source {source!r}; choose one of {', '.join(SOURCES)}")


def download_gpt2(size="124M", source="openai", models_dir="gpt2"):
    """Download (or copy from a mirror) the checkpoint files of one GPT-2 size into ``models_dir/size``."""
    folder = Path(models_dir) / size
    for file, url in gpt2_urls(size, source).items():
        # Neither OpenAI nor Hugging Face publishes checksums for these files, so there is none to verify.
        download(url, folder / file)
    return folder


def import_tensorflow():
    """Import TensorFlow quietly (it is only needed for OpenAI's checkpoint format)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # silence C++ info/warning logs
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # no oneDNN start-up notice; irrelevant for reading files
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError("reading OpenAI's GPT-2 checkpoint needs TensorFlow (pip install tensorflow-cpu); "
                          "or load the Hugging Face copy with source='hf', which does not") from e
    return tf


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
    tf = import_tensorflow()
    folder = Path(folder)
    hparams = read_json(folder / "hparams.json", ["n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"])
    checkpoint = tf.train.latest_checkpoint(str(folder))
    if checkpoint is None:
        raise FileNotFoundError(f"no TensorFlow checkpoint in {folder} (its 'checkpoint' file is missing)")
    reader = tf.train.load_checkpoint(checkpoint)
    params = {}
    for name, shape in tf.train.list_variables(checkpoint):
        value = reader.get_tensor(name)
        if name.endswith("/w"):  # conv1d weights are stored as (1, in, out)
            if len(shape) != 3 or shape[0] != 1:
                raise ValueError(f"{checkpoint}: tensor '{name}' has shape {tuple(shape)}, expected (1, in, out)")
            value = value[0]
        params[openai_to_hf_name(name)] = value
    return params, hparams


def read_hf_safetensors(folder):
    """Read Hugging Face's GPT-2 model.safetensors and config.json in ``folder``; return (params, hparams).

    The hyperparameters are returned under OpenAI's hparams.json names so both sources are handled alike.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_json(folder / "config.json", ["vocab_size", "n_positions", "n_embd", "n_head", "n_layer"])
    with safe_open(folder / "model.safetensors", framework="pt") as f:
        metadata = f.metadata() or {}
    hparams = {"n_vocab": config["vocab_size"], "n_ctx": config["n_positions"], "n_embd": config["n_embd"],
               "n_head": config["n_head"], "n_layer": config["n_layer"]}
    stand_in = config.get(STAND_IN_KEY) or metadata.get(STAND_IN_KEY)
    if stand_in:
        hparams[STAND_IN_KEY] = stand_in
    # Besides the parameters the file holds each block's causal-mask buffer "h.N.attn.bias"; it is not
    # looked up, since GPTModel builds its own mask.
    return load_file(folder / "model.safetensors"), hparams


def gpt2_config(hparams, drop_rate=0.0):
    """The GPTConfig described by a checkpoint's hyperparameters (OpenAI's hparams.json names)."""
    return GPTConfig(vocab_size=hparams["n_vocab"], context_length=hparams["n_ctx"], emb_dim=hparams["n_embd"],
                     n_heads=hparams["n_head"], n_layers=hparams["n_layer"], drop_rate=drop_rate,
                     qkv_bias=True, tie_embeddings=True)


def load_gpt2(size="124M", source="openai", models_dir="gpt2", drop_rate=0.0):
    """Download GPT-2 weights of one size from ``source`` ("openai" or "hf") and return them in a GPTModel.

    The model is in eval mode; its output head is tied to the token embedding, as in GPT-2.
    """
    folder = download_gpt2(size, source, models_dir)
    reader = read_openai_checkpoint if source == "openai" else read_hf_safetensors
    params, hparams = reader(folder)
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
        print(f"Loaded synthetic stand-in weights (test fixture) for GPT-2 {size}: generated text is meaningless")
    return model.eval()
