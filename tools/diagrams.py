"""Draw the course's diagrams and place them in the chapter notebooks.

    python tools/diagrams.py                      # redraw every diagram and update the notebooks
    python tools/diagrams.py ch03/causal-mask     # only this one (FOLDER/NAME)

Every diagram is drawn with matplotlib (its bundled DejaVu fonts, a fixed size and dpi) and saved as a PNG in the
``figures/`` folder of its chapter, where READMEs can show it. Inside a notebook it is a markdown cell whose image
is the PNG itself as a ``data:image/png;base64`` URI, so it travels inside the ``.ipynb`` file: Colab opens a single
notebook without its folder and does not draw markdown *attachments* (googlecolab/colabtools#3836), but stores
pasted images as data URIs itself (tools/README.md says which renderers were checked here, and how).

Where a diagram shows numbers they are computed here with the chapter's own data and code: GPT-2's tokenizer
(tiktoken), the toy inputs and logits the notebooks use (tests/test_diagrams.py checks they are still the
notebooks'), chapter 7's ``collate`` on real entries of its data set, autograd on appendix A's example.
"""

import argparse
import base64
import functools
import importlib.util
import io
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.collections import Collection  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import FancyBboxPatch, Patch  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from PIL import Image, PngImagePlugin  # noqa: E402  (a dependency of matplotlib)

ROOT = Path(__file__).resolve().parents[1]
DPI = 100
FONT = 10
EDGE = "#4d4d4d"
INK = "#222222"
MUTED = "#666666"
COLORS = {  # one meaning per colour in every diagram
    "text": "#fbe3c2",  # raw text, prompts
    "token": "#cfe3f5",  # tokens, inputs
    "id": "#dcefd0",  # ids, numbers
    "vector": "#e6d9f2",  # embeddings, vectors, hidden states
    "target": "#fbd3c0",  # targets, outputs, losses
    "layer": "#eeeeee",  # layers and operations
    "train": "#bfe6c6",  # trainable
    "frozen": "#d9d9d9",  # frozen
    "masked": "#f3c1c1",  # masked / ignored
    "accent": "#e8912d",  # highlight lines and bars
    "bar": "#5b8fc7",  # plain bars
}
plt.rcParams.update({"font.family": "DejaVu Sans", "font.size": FONT, "svg.hashsalt": "course",
                     "path.simplify": False})


# ---------------------------------------------------------------------------------------------------------------------
# drawing helpers: every diagram is a blank canvas measured in inches, so positions read as sizes on the page


def canvas(width, height):
    """A figure of ``width`` x ``height`` inches whose axes use inches as data coordinates, origin bottom left."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def box(ax, x, y, w, h, text="", color="layer", fontsize=FONT, weight="normal", edge=EDGE, style="round", **kw):
    """A rounded box with lower-left corner (x, y) and centred text; returns its patch."""
    pad = 0.04 if style == "round" else 0
    patch = ax.add_patch(FancyBboxPatch((x + pad, y + pad), w - 2 * pad, h - 2 * pad,
                                        boxstyle=f"round,pad={pad}" if style == "round" else "square,pad=0",
                                        facecolor=COLORS.get(color, color), edgecolor=edge, linewidth=1.0))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, color=INK,
                fontweight=weight, **kw)
    return patch


def arrow(ax, start, end, text=None, color=EDGE, style="-|>", offset=(0.08, 0), ha="left", fontsize=FONT - 1,
          connection="arc3"):
    """An arrow from ``start`` to ``end``, with an optional label beside its middle."""
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle=style, color=color, lw=1.2,
                                                          shrinkA=0, shrinkB=0, connectionstyle=connection))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text, ha=ha,
                va="center", fontsize=fontsize, color=MUTED)


def title(ax, x, y, text, fontsize=FONT + 2, ha="left"):
    ax.text(x, y, text, ha=ha, va="center", fontsize=fontsize, fontweight="bold", color=INK)


def note(ax, x, y, text, ha="left", fontsize=FONT - 1, color=MUTED, **kw):
    ax.text(x, y, text, ha=ha, va="center", fontsize=fontsize, color=color, **kw)


def shown(token):
    """A token as drawn: its leading space visible as a small open box."""
    return token.replace(" ", "\u2423").replace("\n", "\\n")


def gpt2_tokens(text):
    """GPT-2's token ids for ``text`` and the text of each token."""
    import tiktoken

    tokenizer = tiktoken.get_encoding("gpt2")
    ids = tokenizer.encode(text)
    return ids, [tokenizer.decode([i]) for i in ids]


def load_module(path, name):
    """Import the module at ``path`` (with its folder first on sys.path, as when run from there).

    Chapter folders reuse module names (each has its own ``previous_chapters.py``), so the folder's own modules are
    imported afresh and taken out of ``sys.modules`` again afterwards: another chapter's copy is never picked up.
    """
    local = {p.stem for p in path.parent.glob("*.py")}
    saved = {n: sys.modules.pop(n) for n in local if n in sys.modules}
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))
        for n in local:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


# ---------------------------------------------------------------------------------------------------------------------
# chapter 2

CH02_SENTENCE = "Your journey starts with one step."
CH02_WINDOW_TEXT = "Every effort moves you forward, one small step at a time."


def ch02_text_to_vectors():
    ids, tokens = gpt2_tokens(CH02_SENTENCE)
    fig, ax = canvas(8.4, 4.75)
    left, cell, gap = 1.25, 0.86, 0.06
    rows = {"text": 4.05, "tokens": 3.05, "ids": 2.05, "vectors": 0.25}
    labels = {"text": "text", "tokens": "tokens", "ids": "token ids", "vectors": "embedding\nvectors"}
    for key, y in rows.items():
        note(ax, 0.15, y + (0.28 if key != "vectors" else 0.95), labels[key], fontsize=FONT, color=INK)
    width = len(tokens) * (cell + gap) - gap
    box(ax, left, rows["text"], width, 0.55, f'"{CH02_SENTENCE}"', "text", fontsize=FONT + 1)
    rng = __import__("random").Random(123)
    for i, (token, token_id) in enumerate(zip(tokens, ids)):
        x = left + i * (cell + gap)
        box(ax, x, rows["tokens"], cell, 0.55, shown(token), "token")
        box(ax, x, rows["ids"], cell, 0.55, str(token_id), "id")
        for j in range(6):  # a few entries of the vector, shaded by a made-up value
            shade = rng.uniform(0.15, 0.85)
            ax.add_patch(plt.Rectangle((x + 0.23, rows["vectors"] + 0.2 * j), 0.4, 0.2, edgecolor=EDGE, lw=0.6,
                                       facecolor=plt.cm.Purples(shade)))
        note(ax, x + cell / 2, rows["vectors"] + 1.3, "\u22ee", ha="center", fontsize=FONT)
    labels = ["GPT-2's tokenizer splits the text into pieces it knows",
              "each piece has an id in the vocabulary (50,257 ids)",
              "the embedding layer returns the row of a 50,257 \u00d7 768 matrix at each id (GPT-2 small)"]
    for label, y_from, y_to in zip(labels, [rows["text"], rows["tokens"], rows["ids"]],
                                   [rows["tokens"] + 0.55, rows["ids"] + 0.55, rows["vectors"] + 1.45]):
        arrow(ax, (left + 0.4, y_from), (left + 0.4, y_to), text=label)
    note(ax, 0.15, rows["vectors"] + 0.2, "768 numbers per\ntoken; random at\nfirst, then learned", fontsize=FONT - 2)
    return fig


def ch02_sliding_windows():
    ids, tokens = gpt2_tokens(CH02_WINDOW_TEXT)
    max_length = stride = 4
    fig, ax = canvas(8.4, 4.5)
    cell, left = 0.56, 0.95
    title(ax, 0.15, 4.25, f"max_length = {max_length}, stride = {stride}: target y = input x moved one token on",
          fontsize=FONT + 1)
    for color, label, x in [("token", "x: input ids", 0.15), ("target", "y: target ids", 1.8)]:
        box(ax, x, 3.72, 0.3, 0.22, "", color, style="square")
        note(ax, x + 0.4, 3.83, label, color=INK)
    for i, token in enumerate(tokens):
        box(ax, left + i * cell, 2.8, cell, 0.5, shown(token), "layer", fontsize=FONT - 2)
        note(ax, left + (i + 0.5) * cell, 2.65, str(i), ha="center", fontsize=FONT - 2)
    note(ax, 0.15, 3.05, "tokens", color=INK, fontsize=FONT)
    n_windows = len(range(0, len(ids) - max_length, stride))  # the starts GPTDataset (ch02) uses
    for w in range(n_windows):
        start, y = w * stride, 1.85 - w * 0.75
        note(ax, 0.15, y + 0.45, f"window {w + 1}", color=INK, fontsize=FONT - 1)
        for k in range(max_length):
            box(ax, left + (start + k) * cell, y + 0.3, cell, 0.32, str(ids[start + k]), "token", fontsize=FONT - 2)
            box(ax, left + (start + k + 1) * cell, y - 0.05, cell, 0.32, str(ids[start + k + 1]), "target",
                fontsize=FONT - 2)
    note(ax, 0.15, 0.15, f"GPT-2 token ids: {len(ids)} tokens give {n_windows} windows. With stride 1, neighbouring "
                         "windows would share all but one token.", fontsize=FONT - 1)
    return fig


def ch02_token_position_embeddings():
    fig, ax = canvas(8.4, 3.9)
    cell, h = 0.28, 0.22
    import torch

    torch.manual_seed(123)
    token_vectors, position_vectors = torch.rand(4, 6), torch.rand(4, 6)
    groups = [("token embeddings", token_vectors, 0.35, "tok_emb(ids)"),
              ("position embeddings", position_vectors, 3.05, "pos_emb(0..3)"),
              ("input embeddings", (token_vectors + position_vectors) / 2, 5.75, "what block 1 receives")]
    for name, values, x0, caption in groups:
        title(ax, x0 + 1.1, 3.55, name, fontsize=FONT + 1, ha="center")
        note(ax, x0 + 1.1, 3.25, caption, ha="center")
        for t in range(4):
            x = x0 + t * 0.58
            for j in range(6):
                ax.add_patch(plt.Rectangle((x, 1.45 + j * h), cell, h, edgecolor=EDGE, lw=0.6,
                                           facecolor=plt.cm.Purples(0.15 + 0.7 * float(values[t, j]))))
            note(ax, x + cell / 2, 1.2, f"pos {t}" if name == "position embeddings" else f"token {t}",
                 ha="center", fontsize=FONT - 2)
    ax.text(2.8, 2.1, "+", fontsize=22, ha="center", va="center", color=INK)
    ax.text(5.5, 2.1, "=", fontsize=22, ha="center", va="center", color=INK)
    note(ax, 1.1 + 0.35, 0.8, "(8, 4, 256)\nbatch, tokens, dim", ha="center", color=INK)
    note(ax, 1.1 + 3.05, 0.8, "(4, 256)\nsame for every row\nof the batch", ha="center", color=INK)
    note(ax, 1.1 + 5.75, 0.8, "(8, 4, 256)", ha="center", color=INK)
    note(ax, 0.15, 0.2, "Shapes of section 2.10: batches of 8 windows of 4 tokens, 256 dimensions (GPT-2 small: 768)."
                        " Shades stand for numbers.", fontsize=FONT - 2)
    return fig


CH02_BPE_WORDS = ["Hello", " sunlit", " terraces", " someunknownPlace"]  # words of ch02.ipynb's section 2.6 text


def ch02_bpe_pieces():
    fig, ax = canvas(8.4, 3.9)
    title(ax, 0.2, 3.6, "GPT-2's BPE tokenizer: frequent words are one token, rare words are split into known pieces",
          fontsize=FONT)
    for row, word in enumerate(CH02_BPE_WORDS):
        ids, pieces = gpt2_tokens(word)
        y = 2.75 - row * 0.7
        box(ax, 0.2, y, 2.1, 0.5, shown(word), "text", fontsize=FONT)
        arrow(ax, (2.35, y + 0.25), (2.75, y + 0.25))
        x = 2.8
        for token_id, piece in zip(ids, pieces):
            width = 0.45 + 0.11 * len(piece)
            box(ax, x, y + 0.12, width, 0.38, shown(piece), "token", fontsize=FONT - 1)
            note(ax, x + width / 2, y + 0.02, str(token_id), ha="center", fontsize=FONT - 2, color=INK)
            x += width + 0.08
        note(ax, 7.3, y + 0.25, f"{len(ids)} token{'s' * (len(ids) > 1)}", color=INK)
    note(ax, 0.2, 0.25, "Token texts above their ids (tiktoken's \"gpt2\" encoding); \u2423 is the leading space a "
                        "token carries.", fontsize=FONT - 1)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# chapter 3

CH03_WORDS = ["Bright", "stars", "guide", "sailors", "across", "oceans"]
CH03_INPUTS = [[0.62, 0.18, 0.91], [0.55, 0.22, 0.84], [0.12, 0.77, 0.30],
               [0.21, 0.69, 0.15], [0.08, 0.35, 0.52], [0.48, 0.41, 0.73]]  # ch03.ipynb, section 3.2


def ch03_attention_weights():
    import torch

    inputs = torch.tensor(CH03_INPUTS)
    query = inputs[2]
    scores = inputs @ query
    weights = torch.softmax(scores, dim=0)
    context = weights @ inputs
    fig, ax = canvas(8.4, 4.3)
    columns = {"word": 0.2, "x": 1.3, "score": 3.55, "weight": 5.1}
    heads = {"word": "token", "x": "input vector x\u1d62", "score": "score \u03c9\u1d62 = x\u1d62 \u00b7 q",
             "weight": "weight \u03b1\u1d62 = softmax(\u03c9)\u1d62"}
    for key, x in columns.items():
        title(ax, x, 3.95, heads[key], fontsize=FONT)
    for i, word in enumerate(CH03_WORDS):
        y = 3.3 - i * 0.42
        is_query = i == 2
        box(ax, columns["word"], y, 0.95, 0.34, word, "text" if is_query else "token", fontsize=FONT - 1,
            weight="bold" if is_query else "normal")
        note(ax, columns["x"], y + 0.17, "[" + ", ".join(f"{v:.2f}" for v in CH03_INPUTS[i]) + "]", color=INK)
        note(ax, columns["score"], y + 0.17, f"{scores[i]:.4f}", color=INK)
        ax.add_patch(plt.Rectangle((columns["weight"], y + 0.05), 5 * float(weights[i]), 0.24,
                                   facecolor=COLORS["accent"] if is_query else COLORS["bar"], edgecolor="none"))
        note(ax, columns["weight"] + 5 * float(weights[i]) + 0.08, y + 0.17, f"{weights[i]:.4f}", color=INK)
    note(ax, 0.2, 0.62, "query q = x of \"guide\"; the weights sum to 1", color=INK)
    note(ax, 0.2, 0.25, "context vector z = \u03a3\u1d62 \u03b1\u1d62 x\u1d62 = [" +
         ", ".join(f"{v:.4f}" for v in context) + "]", color=INK, fontsize=FONT, fontweight="bold")
    return fig


def ch03_qkv_projections():
    fig, ax = canvas(8.4, 4.2)
    box(ax, 0.2, 1.7, 1.3, 0.8, "inputs X\n(6, 3)", "token")
    rows = [("W_query", "queries Q", 3.2), ("W_key", "keys K", 2.0), ("W_value", "values V", 0.8)]
    for weight, name, y in rows:
        arrow(ax, (1.5, 2.1), (2.1, y + 0.3))
        box(ax, 2.1, y, 1.3, 0.6, f"{weight}\n(3, 2)", "train", fontsize=FONT - 1)
        arrow(ax, (3.4, y + 0.3), (3.8, y + 0.3))
        box(ax, 3.8, y, 1.1, 0.6, f"{name}\n(6, 2)", "vector", fontsize=FONT - 1)
    box(ax, 5.45, 2.55, 1.3, 0.8, "scores\nQ Kᵀ\n(6, 6)", "id", fontsize=FONT - 1)
    arrow(ax, (4.9, 3.5), (5.45, 3.1))
    arrow(ax, (4.9, 2.3), (5.45, 2.8))
    box(ax, 7.0, 2.55, 1.3, 0.8, "weights\n(6, 6)", "id", fontsize=FONT - 1)
    arrow(ax, (6.75, 2.95), (7.0, 2.95))
    note(ax, 6.2, 3.6, "softmax(scores / \u221a2)", ha="center")
    box(ax, 7.0, 0.8, 1.3, 0.8, "context\nweights @ V\n(6, 2)", "target", fontsize=FONT - 1)
    arrow(ax, (7.65, 2.55), (7.65, 1.6))
    arrow(ax, (4.9, 1.1), (7.0, 1.1))
    note(ax, 0.2, 0.25, "Section 3.3's example: 6 tokens, d_in = 3, d_out = 2, so \u221ad_k = \u221a2. Green: trained "
                        "weights. One context row per token.", fontsize=FONT - 1)
    return fig


def ch03_causal_mask():
    import torch

    inputs = torch.tensor(CH03_INPUTS)
    scores = inputs @ inputs.T
    mask = torch.triu(torch.ones(6, 6), diagonal=1).bool()
    masked = scores.masked_fill(mask, -torch.inf)
    weights = torch.softmax(masked, dim=-1)
    fig, ax = canvas(8.4, 4.3)
    size = 0.5
    panels = [("scores, future masked to \u2212\u221e", masked, 0.9), ("weights = softmax per row", weights, 5.0)]
    for name, values, x0 in panels:
        title(ax, x0, 4.05, name, fontsize=FONT)
        for i in range(6):
            note(ax, x0 - 0.08, 3.35 - i * size, CH03_WORDS[i], ha="right", fontsize=FONT - 2, color=INK)
            for j in range(6):
                future = bool(mask[i, j])
                box(ax, x0 + j * size, 3.1 - i * size, size, size,
                    "\u2212\u221e" if future and values is masked else f"{values[i, j]:.2f}",
                    "masked" if future else ("id" if values is masked else "vector"), fontsize=FONT - 3,
                    style="square")
        for j in range(6):
            ax.text(x0 + (j + 0.5) * size, 3.68, CH03_WORDS[j], rotation=40, ha="left", va="bottom",
                    fontsize=FONT - 3, color=INK)
    note(ax, 0.2, 0.3, "Row i is token i looking back: it may use tokens 0..i only. Red cells are the mask; after "
                       "the softmax they are 0\nand each row still sums to 1. (Illustrated with section 3.2's "
                       "untrained scores x\u1d62 \u00b7 x\u2c7c.)", fontsize=FONT - 1)
    return fig


def ch03_multi_head():
    fig, ax = canvas(8.4, 5.0)
    steps = [("x", "(batch, tokens, 768)", "token"),
             ("W_query(x), W_key(x), W_value(x)", "(batch, tokens, 768) each", "vector"),
             (".view(batch, tokens, 12, 64)", "(batch, tokens, 12, 64)", "vector"),
             (".transpose(1, 2): one attention per head", "(batch, 12, tokens, 64)", "vector"),
             ("masked softmax(Q Kᵀ / \u221a64) @ V", "(batch, 12, tokens, 64)", "target"),
             (".transpose(1, 2).reshape(...): heads side by side", "(batch, tokens, 768)", "vector"),
             ("out_proj: Linear(768, 768) mixes the heads", "(batch, tokens, 768)", "train")]
    for k, (operation, shape, color) in enumerate(steps):
        y = 4.35 - k * 0.62
        box(ax, 0.2, y, 3.35, 0.46, operation, color, fontsize=FONT - 2)
        note(ax, 3.62, y + 0.23, shape, color=INK, fontsize=FONT - 2)
        if k:
            arrow(ax, (1.875, y + 0.62), (1.875, y + 0.46))
    title(ax, 6.95, 4.6, "one token's 768 numbers", fontsize=FONT, ha="center")
    colours = plt.cm.tab20.colors
    for h in range(12):
        ax.add_patch(plt.Rectangle((5.75 + h * 0.2, 4.0), 0.2, 0.35, facecolor=colours[h], edgecolor="white"))
    note(ax, 6.95, 3.75, "split into 12 heads of 64", ha="center")
    for h in range(12):
        ax.add_patch(plt.Rectangle((5.9, 3.3 - h * 0.2), 1.7, 0.18, facecolor=colours[h], edgecolor="white"))
        note(ax, 7.67, 3.39 - h * 0.2, f"head {h}", fontsize=FONT - 3)
    note(ax, 6.95, 0.65, "each head attends on its own,\nthen they are concatenated", ha="center")
    note(ax, 0.2, 0.15, "GPT-2 small: d_out = 768, 12 heads, head_dim = 768 / 12 = 64 (MultiHeadAttention, "
                        "chapter 3).", fontsize=FONT - 1)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# chapter 4


def ch04_gpt_model():
    fig, ax = canvas(8.4, 6.8)
    x, w = 0.3, 3.5
    stack = [("token ids", "(batch, tokens)", "id", 0.45),
             ("tok_emb: Embedding(50,257, 768)\n+ pos_emb: Embedding(1,024, 768)", "(batch, tokens, 768)",
              "vector", 0.7),
             ("drop_emb: Dropout(0.1)", "", "layer", 0.45),
             ("trf_blocks: 12 \u00d7 TransformerBlock", "(batch, tokens, 768)", "layer", 1.25),
             ("final_norm: LayerNorm(768)", "", "layer", 0.45),
             ("out_head: Linear(768, 50,257)", "", "layer", 0.45),
             ("logits: a score for every\nvocabulary token at every position", "(batch, tokens, 50,257)",
              "target", 0.7)]
    y = 0.35
    centres = []
    for text, shape, color, h in reversed(stack):
        if text.startswith("trf_blocks"):
            for k in range(3):
                box(ax, x + 0.15 + 0.1 * k, y + 0.1 + 0.08 * (2 - k), w - 0.3, h - 0.35, "", "layer")
            ax.text(x + w / 2 + 0.1, y + h / 2, text, ha="center", va="center", fontsize=FONT, color=INK)
        else:
            box(ax, x, y, w, h, text, color)
        if shape:
            note(ax, x + w + 0.15, y + h / 2, shape, color=INK)
        centres.append((y, y + h))
        y += h + 0.3
    for (_, top), (bottom, _) in zip(centres, centres[1:]):
        arrow(ax, (x + w / 2, bottom), (x + w / 2, top))
    note(ax, 5.9, 4.3, "each block: LayerNorm,\nmulti-head attention\n(12 heads), shortcut;\nLayerNorm, "
                       "feed forward\n(768 \u2192 3,072 \u2192 768,\nGELU), shortcut", color=INK, fontsize=FONT - 1)
    note(ax, 5.9, 2.2, "GPTModel(GPT_CONFIG_124M):\ncontext_length 1,024\nemb_dim 768, n_heads 12\n"
                       "n_layers 12, drop_rate 0.1", color=INK, fontsize=FONT - 1)
    return fig


def ch04_transformer_block():
    fig, ax = canvas(8.4, 6.7)
    x, w = 1.7, 3.0
    mid = x + w / 2
    layers = [("norm1: LayerNorm", "layer", 0.7, 0.5), ("att: MultiHeadAttention\n12 heads, causal mask", "vector",
                                                         1.45, 0.6),
              ("drop_shortcut: Dropout", "layer", 2.3, 0.5), ("norm2: LayerNorm", "layer", 3.55, 0.5),
              ("ff: Linear(768, 3,072) \u2192 GELU\n\u2192 Linear(3,072, 768)", "vector", 4.25, 0.6),
              ("drop_shortcut: Dropout", "layer", 5.1, 0.5)]
    note(ax, mid, 0.15, "x: (batch, tokens, 768)", ha="center", color=INK)
    for text, color, y, h in layers:
        box(ax, x, y, w, h, text, color, fontsize=FONT - 1)
    for y in [3.15, 5.95]:  # the two additions
        ax.add_patch(plt.Circle((mid, y), 0.17, facecolor="white", edgecolor=EDGE))
        ax.text(mid, y, "+", ha="center", va="center", fontsize=FONT + 2)
    for a, b in [(0.3, 0.7), (1.2, 1.45), (2.05, 2.3), (2.8, 2.98), (3.32, 3.55), (4.05, 4.25), (4.85, 5.1),
                 (5.6, 5.78), (6.12, 6.4)]:
        arrow(ax, (mid, a), (mid, b))
    note(ax, mid, 6.53, "output: same shape as x", ha="center", color=INK)
    for y0, y1 in [(0.5, 3.15), (3.4, 5.95)]:  # each shortcut leaves before the branch and joins at its "+"
        ax.plot([mid, x - 0.35, x - 0.35], [y0, y0, y1], color=COLORS["accent"], lw=1.8)
        arrow(ax, (x - 0.35, y1), (mid - 0.17, y1), color=COLORS["accent"])
        note(ax, x - 0.45, (y0 + y1) / 2, "shortcut", ha="right", color=COLORS["accent"])
    note(ax, 5.0, 4.55, "GELU sits inside the feed-forward\nbranch, between its two linear layers", color=INK)
    note(ax, 5.0, 3.0, "LayerNorm comes before each branch\n(pre-LayerNorm), and once more after\nthe last block "
                       "(final_norm)", color=INK)
    note(ax, 5.0, 1.6, "The shortcut adds the block's input to\nthe branch's output: x + branch(x).\n"
                       "Gradients flow back through it.", color=INK)
    return fig


def ch04_layer_norm():
    import torch
    import torch.nn as nn

    torch.manual_seed(123)  # ch04.ipynb, section 4.2
    examples = torch.randn(2, 5)
    layer = nn.Sequential(nn.Linear(5, 6), nn.ReLU())
    with torch.no_grad():
        out = layer(examples)
    mean = out.mean(dim=-1, keepdim=True)
    var = out.var(dim=-1, keepdim=True, unbiased=False)
    normed = (out - mean) / torch.sqrt(var)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.3), sharey=True)
    for ax, values, name in [(axes[0], out, "output of Linear(5, 6) + ReLU"), (axes[1], normed, "after normalizing")]:
        for row in range(2):
            positions = [i + (row - 0.5) * 0.38 for i in range(6)]
            color = [COLORS["bar"], COLORS["accent"]][row]
            ax.bar(positions, values[row].tolist(), width=0.36, color=color)
            row_mean = round(values[row].mean().item(), 2) + 0.0  # + 0.0 turns -0.0 into 0.0
            ax.text(0.02, 0.95 - 0.08 * row, f"row {row}: mean {row_mean:.2f}, variance "
                                             f"{values[row].var(unbiased=False):.2f}", color=color,
                    transform=ax.transAxes, fontsize=FONT - 2, va="center", fontweight="bold")
        ax.axhline(0, color=EDGE, lw=0.8)
        ax.set_title(name, fontsize=FONT)
        ax.set_xticks(range(6), [f"feature {i}" for i in range(6)], fontsize=FONT - 3)
        ax.tick_params(axis="y", labelsize=FONT - 2)
        ax.spines[["top", "right"]].set_visible(False)
    axes[1].set_ylim(-1.6, 2.6)
    fig.suptitle("Layer normalization works per row (per token): subtract the row's mean, divide by its standard "
                 "deviation", fontsize=FONT)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.1, top=0.82, wspace=0.06)  # fixed: no tight_layout
    return fig


def ch04_parameter_budget():
    import torch

    gpt = load_module(ROOT / "ch04" / "gpt.py", "ch04_gpt")
    with torch.device("meta"):  # shapes only: no memory, instant
        model = gpt.GPTModel(gpt.GPT_CONFIG_124M)
    groups = {"token embedding (tok_emb)": "tok_emb.", "position embedding (pos_emb)": "pos_emb.",
              "attention, 12 blocks (att)": ".att.", "feed forward, 12 blocks (ff)": ".ff.",
              "LayerNorms (norm1, norm2, final_norm)": "norm", "output layer (out_head)": "out_head."}
    counts = {name: sum(p.numel() for n, p in model.named_parameters() if key in n) for name, key in groups.items()}
    total = sum(p.numel() for p in model.parameters())
    assert sum(counts.values()) == total, "every parameter belongs to exactly one group"
    fig, ax = plt.subplots(figsize=(8.4, 3.6))
    names = list(counts)[::-1]
    values = [counts[n] / 1e6 for n in names]
    colors = [COLORS["accent"] if n.startswith(("token", "output")) else COLORS["bar"] for n in names]
    ax.barh(names, values, color=colors)
    for k, n in enumerate(names):
        share = 100 * counts[n] / total
        ax.text(values[k] + 0.8, k, f"{counts[n]:,} ({share:.1f} %)" if share >= 0.1 else f"{counts[n]:,} (< 0.1 %)",
                va="center", fontsize=FONT - 2)
    ax.set_xlim(0, max(values) * 1.45)
    ax.set_xlabel("parameters (millions)", fontsize=FONT - 1)
    ax.tick_params(labelsize=FONT - 2)
    ax.spines[["top", "right"]].set_visible(False)
    tied = total - counts["output layer (out_head)"]
    ax.set_title(f"GPTModel(GPT_CONFIG_124M): {total:,} parameters\nwith the output layer tied to the token "
                 f"embedding (orange bars shared): {tied:,}", fontsize=FONT - 1)
    fig.subplots_adjust(left=0.31, right=0.98, bottom=0.14, top=0.85)  # fixed: no tight_layout
    return fig


CH04_PROMPT = "Hello, I am"  # ch04.ipynb, section 4.7


def ch04_greedy_loop():
    ids, tokens = gpt2_tokens(CH04_PROMPT)
    fig, ax = canvas(8.4, 3.9)
    title(ax, 0.2, 3.65, "Greedy decoding (generate_greedy): one new token per pass through the model",
          fontsize=FONT + 1)
    x = 0.2
    for token_id, token in zip(ids, tokens):
        box(ax, x, 2.65, 0.85, 0.6, f"{shown(token)}\n{token_id}", "token", fontsize=FONT - 2)
        x += 0.9
    box(ax, x, 2.65, 0.85, 0.6, "next\nid", "target", fontsize=FONT - 2)
    note(ax, 0.2, 3.38, f'prompt "{CH04_PROMPT}": {len(ids)} token ids, shape (1, {len(ids)})', color=INK,
         fontsize=FONT - 1)
    steps = [(0.2, "crop to the last\ncontext_length ids", "layer"),
             (2.25, f"model(ids)\nlogits (1, {len(ids)}, 50,257)", "vector"),
             (4.3, "logits[:, -1, :]\nthe last position", "vector"),
             (6.35, "argmax: the id\nwith the top score", "target")]
    for k, (x0, text, color) in enumerate(steps):
        box(ax, x0, 1.1, 1.85, 0.75, text, color, fontsize=FONT - 2)
        if k:
            arrow(ax, (x0 - 0.2, 1.47), (x0, 1.47))
    arrow(ax, (1.1, 2.65), (1.1, 1.85))
    ax.annotate("", xy=(x + 0.42, 2.65), xytext=(7.27, 1.85),
                arrowprops=dict(arrowstyle="-|>", color=COLORS["accent"], lw=1.4, shrinkA=0, shrinkB=0))
    note(ax, 6.45, 2.3, "append with torch.cat,\nthen repeat", color=COLORS["accent"])
    note(ax, 0.2, 0.45, "No softmax is needed: it keeps the order of the scores. With untrained weights the chosen "
                        "tokens are\nnonsense; chapter 5 trains the model, and adds temperature and top-k sampling.",
         fontsize=FONT - 1)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# training loops (chapter 5 and appendix A)


def draw_loop(steps, heading, footnote, after):
    """A cycle of ``steps`` (text, colour) drawn clockwise, and a box for what happens ``after`` the steps."""
    fig, ax = canvas(8.4, 4.4)
    title(ax, 0.2, 4.15, heading)
    cx, cy, rx, ry = 2.9, 2.05, 1.85, 1.35
    n = len(steps)
    patches = []
    for k, (text, color) in enumerate(steps):
        angle = math.pi / 2 - 2 * math.pi * k / n
        px, py = cx + rx * math.cos(angle), cy + ry * math.sin(angle)
        patches.append(box(ax, px - 1.0, py - 0.3, 2.0, 0.6, text, color, fontsize=FONT - 2))
    for k in range(n):  # arrows from box to box, clipped to the boxes' outlines
        ax.annotate("", xy=(0.5, 0.5), xytext=(0.5, 0.5), xycoords=patches[(k + 1) % n], textcoords=patches[k],
                    arrowprops=dict(arrowstyle="-|>", color=EDGE, lw=1.2, patchA=patches[k],
                                    patchB=patches[(k + 1) % n], connectionstyle="arc3,rad=-0.2", shrinkA=2,
                                    shrinkB=2))
    note(ax, cx, cy, "for each\nbatch", ha="center", color=INK, fontsize=FONT)
    box(ax, 5.75, 1.45, 2.45, 1.2, after, "id", fontsize=FONT - 2)
    note(ax, 0.2, 0.2, footnote, fontsize=FONT - 1)
    return fig


def ch05_training_loop():
    return draw_loop([("input batch, target batch\nfrom the train loader", "token"),
                      ("optimizer.zero_grad()", "layer"),
                      ("loss = cross-entropy of\nmodel(inputs) vs targets", "target"),
                      ("loss.backward()\ngradients for all weights", "layer"),
                      ("optimizer.step()\nAdamW updates weights", "train")],
                     "The training loop of chapter 5 (train in pretraining.py)",
                     "One pass over the training loader is an epoch.",
                     after="every eval_freq steps:\ntrain & validation loss\n\nafter each epoch:\nprint a sample text")


def appendix_a_training_loop():
    return draw_loop([("features, labels\nfrom the DataLoader", "token"),
                      ("logits = model(features)", "vector"),
                      ("loss = F.cross_entropy(\nlogits, labels)", "target"),
                      ("optimizer.zero_grad()\nloss.backward()", "layer"),
                      ("optimizer.step()\nSGD: w -= lr \u00b7 grad", "train")],
                     "The training loop of appendix A (train_one_epoch)",
                     "model.train() before training, model.eval() and torch.no_grad() to evaluate. "
                     "One pass over the loader is an epoch.",
                     after="after each epoch:\ncompute_accuracy on\nthe training and\ntest loaders")


# ---------------------------------------------------------------------------------------------------------------------
# chapter 5: decoding

CH05_VOCAB = ["silent", "dusty", "broken", "tuned", "sold", "painted", "purple", "singing"]
CH05_LOGITS = [4.0, 3.6, 2.9, 2.0, 1.7, 0.6, -0.8, -1.5]  # ch05.ipynb, section 5.3.1


def ch05_temperature_top_k():
    import torch

    logits = torch.tensor(CH05_LOGITS)
    panels = [(f"temperature {t}", torch.softmax(logits / t, dim=0)) for t in (0.5, 1.0, 3.0)]
    kth_best = torch.topk(logits, 3).values[-1]
    panels.append(("top-k = 3, temperature 1", torch.softmax(logits.masked_fill(logits < kth_best, -torch.inf), 0)))
    fig, axes = plt.subplots(1, 4, figsize=(8.4, 3.1), sharey=True)
    for ax, (name, probs) in zip(axes, panels):
        ax.bar(range(len(CH05_VOCAB)), probs.tolist(), color=COLORS["accent"] if "top" in name else COLORS["bar"])
        ax.set_title(name, fontsize=FONT)
        ax.set_xticks(range(len(CH05_VOCAB)), CH05_VOCAB, rotation=60, fontsize=FONT - 2)
        ax.tick_params(axis="y", labelsize=FONT - 2)
        ax.set_ylim(0, 1)
        ax.spines[["top", "right"]].set_visible(False)
        for i, p in enumerate(probs.tolist()):
            if p >= 0.005:
                ax.text(i, p + 0.02, f"{p:.2f}", ha="center", fontsize=FONT - 4)
    axes[0].set_ylabel("probability of the next word")
    fig.suptitle('softmax(logits / T) for "The old piano in the corner was ..." (the toy logits of section 5.3.1)',
                 fontsize=FONT)
    # fixed margins rather than tight_layout, whose result depends on how a matplotlib version measures text
    fig.subplots_adjust(left=0.075, right=0.99, bottom=0.2, top=0.84, wspace=0.08)
    return fig


@functools.cache
def ch05_untrained_target_probabilities():
    """The probabilities section 5.1.2's untrained model gives its six target tokens, and the vocabulary size."""
    import tiktoken
    import torch

    chapter = load_module(ROOT / "ch05" / "previous_chapters.py", "ch05_previous_chapters")
    config = chapter.GPTConfig(context_length=256)  # GPT_CONFIG_124M_256 of ch05.ipynb
    torch.manual_seed(123)
    model = chapter.GPTModel(config).eval()
    tokenizer = tiktoken.get_encoding("gpt2")
    ids = torch.tensor([tokenizer.encode(s) for s in CH05_SENTENCES])
    inputs, targets = ids[:, :-1], ids[:, 1:]
    with torch.no_grad():
        probas = torch.softmax(model(inputs), dim=-1)
    return torch.gather(probas, -1, targets.unsqueeze(-1)).flatten().tolist(), config.vocab_size


CH05_SENTENCES = ["The old painter smiled", "He had stopped painting"]  # ch05.ipynb, section 5.1.2


def ch05_cross_entropy():
    target_probs, vocab_size = ch05_untrained_target_probabilities()
    loss = -sum(math.log(p) for p in target_probs) / len(target_probs)
    fig, ax = plt.subplots(figsize=(8.4, 4.0))
    p = [10 ** (k / 50) for k in range(-300, 1)]
    ax.plot(p, [-math.log(v) for v in p], color=EDGE, lw=1.2)
    ax.set_xscale("log")
    ax.set_xlim(1e-6, 1.5)
    ax.set_ylim(0, 14)
    uniform = 1 / vocab_size
    points = [(target_probs, "o", COLORS["bar"], f"the untrained model's 6 target tokens (5.1.2): mean loss "
                                                 f"{loss:.2f}, perplexity e^{loss:.2f} \u2248 {math.exp(loss):,.0f}"),
              ([uniform], "D", COLORS["accent"], f"uniform guess 1/{vocab_size:,}: loss ln({vocab_size:,}) = "
                                                 f"{math.log(vocab_size):.2f}, perplexity {vocab_size:,}"),
              ([0.5, 1.0], "s", COLORS["train"], "p = 0.5: loss 0.69, perplexity 2;  p = 1: loss 0, perplexity 1")]
    for k, (probs, marker, color, label) in enumerate(points):  # markers drawn as lines: no legend box to measure
        ax.plot(probs, [-math.log(v) for v in probs], linestyle="none", marker=marker, color=color,
                markeredgecolor=EDGE, zorder=3)
        ax.plot([0.25], [0.93 - 0.07 * k], linestyle="none", marker=marker, color=color, markeredgecolor=EDGE,
                transform=ax.transAxes)
        ax.text(0.27, 0.93 - 0.07 * k, label, transform=ax.transAxes, va="center", fontsize=FONT - 2, color=INK)
    ax.set_xlabel("probability the model gives the correct next token (log scale)", fontsize=FONT - 1)
    ax.set_ylabel("loss = \u2212ln p", fontsize=FONT - 1)
    ax.tick_params(labelsize=FONT - 2)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Cross-entropy: the mean of \u2212ln p over the target tokens; perplexity = e^loss", fontsize=FONT)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.92)  # fixed: no tight_layout
    return fig


@functools.cache
def ch05_split_numbers():
    """Characters, tokens and windows of section 5.1.3's training/validation split of The Verdict."""
    import tiktoken
    import torch

    chapter = load_module(ROOT / "ch05" / "previous_chapters.py", "ch05_previous_chapters")
    pretraining = load_module(ROOT / "ch05" / "pretraining.py", "ch05_pretraining")
    with tempfile.TemporaryDirectory() as folder:
        text = chapter.load_verdict(Path(folder) / "the-verdict.txt")
    tokenizer = tiktoken.get_encoding("gpt2")
    split = int(0.9 * len(text))
    torch.manual_seed(123)
    train_loader, val_loader = pretraining.create_train_val_loaders(text, 256, batch_size=2)
    return {"chars": len(text), "split": split, "train_tokens": len(tokenizer.encode(text[:split])),
            "val_tokens": len(tokenizer.encode(text[split:])), "train_batches": len(train_loader),
            "val_batches": len(val_loader), "train_used": sum(x.numel() for x, _ in train_loader),
            "val_used": sum(x.numel() for x, _ in val_loader)}


def ch05_train_val_split():
    n = ch05_split_numbers()
    fig, ax = canvas(8.4, 3.3)
    title(ax, 0.2, 3.05, f"The Verdict, {n['chars']:,} characters: the first 90 % train, the last 10 % validate",
          fontsize=FONT + 1)
    scale = 7.9 / (n["train_tokens"] + n["val_tokens"])
    parts = [("training", 0, n["split"], n["train_tokens"], n["train_batches"], n["train_used"], 0.2, "token"),
             ("validation", n["split"], n["chars"], n["val_tokens"], n["val_batches"], n["val_used"],
              0.2 + n["train_tokens"] * scale, "target")]
    for name, first, last, tokens, batches, used, x0, color in parts:
        windows = used // 256
        for w in range(windows):
            box(ax, x0 + w * 256 * scale, 1.75, 256 * scale, 0.6, "", color, style="square")
        box(ax, x0 + windows * 256 * scale, 1.75, (tokens - used) * scale, 0.6, "", "layer", style="square")
        x, ha = (8.1, "right") if name == "validation" else (x0, "left")  # validation's labels end at the right
        note(ax, x, 2.6, f"{name}: characters {first:,}\u2013{last:,} \u2192 {tokens:,} tokens", color=INK,
             fontsize=FONT - 1, ha=ha)
        note(ax, x, 1.45, f"{windows} windows of 256 = {batches} batch{'es' * (batches > 1)} of 2", color=INK,
             fontsize=FONT - 1, ha=ha)
    unused = n["train_tokens"] - n["train_used"] + n["val_tokens"] - n["val_used"]
    note(ax, 0.2, 0.85, f"Each box is one window of 256 input tokens (stride 256, no overlap); grey: the {unused} "
                        "tokens that fill no window\nare not used. Training reads "
                        f"{n['train_used']:,} tokens per epoch, validation {n['val_used']:,}.", fontsize=FONT - 1)
    note(ax, 0.2, 0.3, "The split is made on characters before tokenizing, so no window spans both parts.",
         fontsize=FONT - 1)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# chapter 6


def ch06_head_swap():
    fig, ax = canvas(8.4, 5.2)
    parts = [("tok_emb + pos_emb", "frozen"), ("TransformerBlock 1", "frozen"), ("\u22ee", "none"),
             ("TransformerBlock 11", "frozen"), ("TransformerBlock 12", "train"), ("final_norm", "train")]
    for side, x0, head, head_color in [("GPT-2 (chapter 5)", 0.3, "out_head: Linear(768, 50,257)", "layer"),
                                       ("spam classifier (chapter 6)", 4.6, "out_head: Linear(768, 2), new", "train")]:
        title(ax, x0 + 1.6, 4.95, side, fontsize=FONT + 1, ha="center")
        y = 0.75
        for text, color in parts:
            if color == "none":
                note(ax, x0 + 1.6, y + 0.15, text, ha="center", color=INK, fontsize=FONT + 2)
                y += 0.4
                continue
            box(ax, x0, y, 3.2, 0.48, text, "layer" if side.startswith("GPT") else color, fontsize=FONT - 1)
            y += 0.6
        box(ax, x0, y + 0.05, 3.2, 0.5, head, head_color, fontsize=FONT - 1)
        note(ax, x0 + 1.6, 0.45, "input: token ids", ha="center", color=INK)
    arrow(ax, (3.65, 2.6), (4.45, 2.6))
    for color, text, x in [("train", "trains (requires_grad=True)", 0.3), ("frozen", "frozen", 3.4)]:
        box(ax, x, 0.02, 0.3, 0.22, "", color, style="square")
        note(ax, x + 0.4, 0.13, text, color=INK)
    note(ax, 4.6, 0.13, "fewer than 6 % of the weights train", color=INK)
    return fig


CH06_MESSAGE = "Are we still meeting for lunch today"  # ch06.ipynb, section 6.5


def ch06_last_token():
    _, words = gpt2_tokens(CH06_MESSAGE)
    fig, ax = canvas(8.4, 3.6)
    cell = 7.35 / len(words)
    for i, word in enumerate(words):
        x = 0.4 + i * cell
        box(ax, x, 0.5, cell - 0.1, 0.45, shown(word), "token", fontsize=FONT - 1)
        last = i == len(words) - 1
        box(ax, x, 2.3, cell - 0.1, 0.5, "2 scores", "target" if last else "frozen", fontsize=FONT - 1)
        for j in range(i + 1):  # causal attention: position i sees tokens 0..i
            ax.plot([0.4 + j * cell + (cell - 0.1) / 2, x + (cell - 0.1) / 2], [0.95, 2.3],
                    color=COLORS["accent"] if last else "#bbbbbb", lw=1.3 if last else 0.6, zorder=0)
    note(ax, 0.4, 3.3, "With the causal mask, the output at position i depends on tokens 0..i only. Only the last "
                       "position\nhas seen the whole message, so its two scores (ham, spam) give the class.",
         color=INK)
    note(ax, 0.4, 0.2, "model(ids)[:, -1, :]  \u2192  (batch, 2)", color=INK, family="DejaVu Sans Mono")
    return fig


@functools.cache
def ch06_data():
    """Counts of section 6.2's data preparation and the lengths of the first training batch of section 6.3."""
    import pandas as pd
    import tiktoken

    module = load_module(ROOT / "ch06" / "classification.py", "ch06_classification")
    with tempfile.TemporaryDirectory() as folder:
        collection = module.read_sms_collection(module.download_sms_spam(folder))
        paths = module.write_splits(module.download_sms_spam(folder), folder, seed=123)
        sizes = {name: len(pd.read_csv(path)) for name, path in paths.items()}
        tokenizer = tiktoken.get_encoding("gpt2")
        datasets = [module.SpamDataset(paths["train"], tokenizer)]
        datasets += [module.SpamDataset(paths[name], tokenizer, max_length=datasets[0].max_length)
                     for name in ["validation", "test"]]
        train_loader, _, _ = module.create_data_loaders(*datasets, batch_size=8, seed=123)
        inputs, labels = next(iter(train_loader))
    counts = collection["Label"].value_counts()
    lengths = [int((row != module.PAD_TOKEN_ID).sum()) for row in inputs]  # no message contains token 50256
    return {"ham": int(counts["ham"]), "spam": int(counts["spam"]), "sizes": sizes, "lengths": lengths,
            "labels": labels.tolist(), "max_length": datasets[0].max_length, "batch_shape": tuple(inputs.shape),
            "loader_batches": len(train_loader)}


def ch06_dataset_split():
    d = ch06_data()
    fig, ax = canvas(8.4, 3.9)
    title(ax, 0.2, 3.65, "From the SMS Spam Collection to three balanced splits", fontsize=FONT + 1)
    scale = 5.6 / (d["ham"] + d["spam"])
    rows = [("collection", [("ham", d["ham"], "token"), ("spam", d["spam"], "target")]),
            ("balanced", [("ham", d["spam"], "token"), ("spam", d["spam"], "target")]),
            ("split 70/10/20", [(name, size, color) for (name, size), color in
                                zip(d["sizes"].items(), ["train", "id", "vector"])])]
    for k, (name, parts) in enumerate(rows):
        y = 2.85 - k * 0.95
        note(ax, 0.2, y + 0.3, name, color=INK)
        x = 1.85
        for label, size, color in parts:
            box(ax, x, y + 0.1, size * scale, 0.4, "", color, style="square")
            x += size * scale
        note(ax, 1.85, y - 0.08, " + ".join(f"{label} {size:,}" for label, size, _ in parts) +
             f" = {sum(size for _, size, _ in parts):,} messages", color=INK, fontsize=FONT - 1)
    note(ax, 0.2, 0.3, f"Balancing keeps {d['spam']:,} randomly chosen ham messages (seed 123), as many as there are "
                       "spam; the 1,494 messages\nare shuffled and cut into training, validation and test parts.",
         fontsize=FONT - 1)
    return fig


def ch06_padding():
    d = ch06_data()
    fig, ax = canvas(8.4, 4.4)
    n, max_length = len(d["lengths"]), d["max_length"]
    title(ax, 0.2, 4.15, f"The first training batch, {d['batch_shape']}: every message padded to {max_length} "
                         "tokens with 50256", fontsize=FONT)
    left, width = 1.3, 5.9
    cell = width / max_length
    for r, (length, label) in enumerate(zip(d["lengths"], d["labels"])):
        y = 3.45 - r * 0.34
        note(ax, 0.2, y + 0.13, f"{['ham', 'spam'][label]}, {length} tokens", color=INK, fontsize=FONT - 2)
        box(ax, left, y, length * cell, 0.26, "", "token", style="square")
        box(ax, left + length * cell, y, (max_length - length) * cell, 0.26, "", "layer", style="square")
        ax.add_patch(plt.Rectangle((left + (max_length - 1) * cell, y), cell, 0.26, facecolor=COLORS["accent"],
                                   edgecolor="none"))
    bottom = 3.45 - (n - 1) * 0.34
    note(ax, left + width + 0.1, bottom + 0.4, f"\u2190 position {max_length - 1}:\nthe pooled\n(last) position",
         color=COLORS["accent"], fontsize=FONT - 2)
    for x in [0, max_length - 1]:
        note(ax, left + (x + 0.5) * cell, 3.85, str(x), ha="center", fontsize=FONT - 3)
    for color, text, x in [("token", "message tokens", 0.2), ("layer", "padding (50256)", 2.2),
                           (COLORS["accent"], "the position the classifier reads", 4.3)]:
        box(ax, x, 0.45, 0.3, 0.22, "", color, style="square")
        note(ax, x + 0.4, 0.56, text, color=INK, fontsize=FONT - 1)
    note(ax, 0.2, 0.15, f"{max_length} is the longest training message. For every shorter message the last position "
                        "holds padding, yet it attends to all the real tokens.", fontsize=FONT - 2)
    return fig


def ch06_classification_loss():
    d = ch06_data()
    batch, tokens = d["batch_shape"]
    fig, ax = canvas(8.4, 3.9)
    steps = [(f"input_batch\n({batch}, {tokens})", "token"),
             (f"model(input_batch)\n({batch}, {tokens}, 2)", "vector"),
             (f"pool_outputs: last\nposition ({batch}, 2)", "vector"),
             (f"cross_entropy with\nlabels ({batch},)", "target")]
    for k, (text, color) in enumerate(steps):
        x = 0.2 + k * 2.07
        box(ax, x, 2.3, 1.8, 0.8, text, color, fontsize=FONT - 2)
        if k:
            arrow(ax, (x - 0.27, 2.7), (x, 2.7))
    box(ax, 4.34, 0.95, 1.8, 0.8, f"argmax over the\n2 scores ({batch},)", "id", fontsize=FONT - 2)
    arrow(ax, (5.24, 2.3), (5.24, 1.75))
    box(ax, 6.41, 0.95, 1.8, 0.8, "accuracy: share of\ncorrect predictions", "id", fontsize=FONT - 2)
    arrow(ax, (6.14, 1.35), (6.41, 1.35))
    note(ax, 0.2, 3.55, "Chapter 5's loss scored 50,257 logits at every position; here one position per message "
                        "counts, with 2 scores", color=INK, fontsize=FONT - 1)
    note(ax, 0.2, 1.35, "training minimizes\nthe loss (top);\naccuracy (bottom) is\nwhat we report", color=INK,
         fontsize=FONT - 1)
    note(ax, 0.2, 0.35, f"Shapes of the first training batch: {batch} messages of {tokens} tokens; class 0 = ham "
                        "(not spam), 1 = spam.", fontsize=FONT - 1)
    return fig


def ch06_two_finetunings():
    train_messages = ch06_data()["sizes"]["train"]
    fig, ax = canvas(8.4, 3.0)
    for x0, heading, example, output, color, facts in [
            (0.2, "classification finetuning (this chapter)", "\"You are a winner! Claim\nyour prize now ...\"",
             "spam", "target", "output layer: 2 scores (one per class)\n"
                               f"labelled examples: {train_messages:,} training messages\n"
                               "answer: always one of the labels"),
            (4.35, "instruction finetuning (chapter 7)", "\"Convert 45 kilometers\nto meters.\"",
             "\"45 kilometers is\n45,000 meters.\"", "text",
             "output layer: unchanged (50,257 tokens)\ndata: instruction\u2013response pairs\n"
             "answer: free text, any task like the data")]:
        title(ax, x0, 2.75, heading, fontsize=FONT)
        box(ax, x0, 1.55, 1.75, 0.85, example, "token", fontsize=FONT - 2)
        arrow(ax, (x0 + 1.75, 1.97), (x0 + 2.05, 1.97))
        box(ax, x0 + 2.05, 1.55, 1.75, 0.85, output, color, fontsize=FONT - 1)
        note(ax, x0, 1.0, facts, color=INK, fontsize=FONT - 2)
    note(ax, 0.2, 0.2, "Both start from the same pretrained GPT-2 and keep training it; they differ in the output "
                       "layer and the data.", fontsize=FONT - 1)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# chapter 7


@functools.cache
def ch07_entries():
    """Chapter 7's module and the entries of its instruction data (fetched into a temporary folder)."""
    module = load_module(ROOT / "ch07" / "instruction_finetuning.py", "ch07_instruction_finetuning")
    with tempfile.TemporaryDirectory() as folder:
        return module, module.load_instruction_data(Path(folder) / "instruction-data.json")


def ch07_prompt_format():
    module, data = ch07_entries()
    entry = data[0]
    parts = [(module.format_input({**entry, "input": ""}).split("### Instruction:")[0], "text", "fixed preamble"),
             ("### Instruction:\n" + entry["instruction"], "token", "the entry's instruction"),
             ("\n\n### Input:\n" + entry["input"], "id", "its input (left out\nwhen it is empty)"),
             ("\n\n### Response:\n", "layer", "response header:\nthe prompt ends here"),
             (entry["output"], "target", "the answer to learn")]
    assert "".join(text for text, _, _ in parts) == module.format_prompt(entry) + entry["output"]
    fig, ax = canvas(8.4, 4.6)
    y = 4.25
    for text, color, label in parts:
        lines = [line for line in text.strip("\n").split("\n")]
        wrapped = []
        for line in lines:
            while len(line) > 60:
                cut = line.rfind(" ", 0, 60)
                wrapped.append(line[:cut])
                line = line[cut + 1:]
            wrapped.append(line)
        height = 0.24 * len(wrapped) + 0.16
        box(ax, 0.2, y - height, 5.45, height, "", color)
        for k, line in enumerate(wrapped):
            ax.text(0.35, y - 0.2 - 0.24 * k, line, fontsize=FONT - 1, family="DejaVu Sans Mono", va="center",
                    color=INK)
        note(ax, 5.8, y - height / 2, label, color=INK, fontsize=FONT - 1)
        y -= height + 0.12
    note(ax, 0.2, 0.2, "Entry 0 of the instruction data in the Alpaca-style format of format_prompt; the "
                       "training example\nis the prompt followed by the output.", fontsize=FONT - 1)
    return fig


CH07_BATCH_ENTRIES = (3, 4, 5)  # three entries of the training split whose lengths differ by a few tokens
CH07_SHOWN_COLUMNS = 11


def ch07_collated_batch():
    import tiktoken

    module, data = ch07_entries()
    tokenizer = tiktoken.get_encoding("gpt2")
    batch = [module.InstructionDataset([data[i]], tokenizer)[0] for i in CH07_BATCH_ENTRIES]
    inputs, targets = module.collate(batch)
    n_cols = inputs.shape[1]
    first = n_cols - CH07_SHOWN_COLUMNS
    fig, ax = canvas(8.4, 5.0)
    cell, left = 0.62, 1.3
    title(ax, 0.2, 4.75, f"collate() on entries {', '.join(map(str, CH07_BATCH_ENTRIES))} ("
                         f"{', '.join(str(len(b)) for b in batch)} tokens): inputs and targets of shape "
                         f"{tuple(inputs.shape)}", fontsize=FONT)
    note(ax, 0.2, 4.42, f"The last {CH07_SHOWN_COLUMNS} positions ({first} to {n_cols - 1}); the earlier ones hold "
                        "the prompts.", fontsize=FONT - 1)
    for name, tensor, y0 in [("inputs", inputs, 3.95), ("targets", targets, 2.2)]:
        title(ax, 0.2, y0, name, fontsize=FONT)
        for r in range(tensor.shape[0]):
            y = y0 - 0.45 * (r + 1)
            note(ax, 0.2, y + 0.19, f"entry {CH07_BATCH_ENTRIES[r]}", color=INK, fontsize=FONT - 1)
            for c in range(CH07_SHOWN_COLUMNS):
                position, value = first + c, int(tensor[r, first + c])
                if value == module.IGNORE_INDEX:
                    color = "masked"
                elif name == "inputs":
                    color = "token" if position < len(batch[r]) else "layer"
                else:  # every target up to the first padding token counts in the loss
                    color = "target"
                box(ax, left + c * cell, y, cell - 0.04, 0.38, str(value), color, fontsize=FONT - 2,
                    style="square")
        for c in range(CH07_SHOWN_COLUMNS):
            note(ax, left + c * cell + 0.29, y0, str(first + c), ha="center", fontsize=FONT - 3)
    legend = [("token", "text tokens", 0.2), ("layer", "50256: padding", 1.75),
              ("target", "targets the loss uses,\nending in one 50256", 3.55), ("masked", "-100: ignored", 6.3)]
    for color, text, x in legend:
        box(ax, x, 0.2, 0.3, 0.22, "", color, style="square")
        note(ax, x + 0.4, 0.31, text, color=INK, fontsize=FONT - 2)
    return fig


def ch07_pipeline():
    module, data = ch07_entries()
    train, test, validation = module.split_data(data)
    fig, ax = canvas(8.4, 4.3)
    title(ax, 0.2, 4.05, "Instruction finetuning in chapter 7", fontsize=FONT + 1)
    stages = [(f"{len(data):,} entries:\ninstruction, input,\noutput (7.2)", "text"),
              (f"split: {len(train)} train,\n{len(validation)} validation,\n{len(test)} test (7.2)", "id"),
              ("format_prompt +\noutput, tokenized\n(7.2, 7.3)", "token"),
              ("collate: pad,\nshift, -100\n(7.3, 7.4)", "token")]
    later = [("finetune pretrained\nGPT-2 medium:\nnext-token loss (7.5, 7.6)", "train"),
             ("generate a response\nfor every test\nprompt (7.7)", "vector"),
             ("extract_response:\nthe text after\nthe prompt (7.7)", "vector"),
             ("score against the\nreference: metrics,\nreading, judge (7.8\u20137.11)", "target")]
    for row, items in enumerate([stages, later]):
        y = 2.6 - row * 1.75
        for k, (text, color) in enumerate(items):
            x = 0.2 + k * 2.05 if row == 0 else 0.2 + (3 - k) * 2.05
            box(ax, x, y, 1.8, 1.0, text, color, fontsize=FONT - 2)
            if k:
                start, end = ((x - 0.25, y + 0.5), (x, y + 0.5)) if row == 0 else ((x + 2.05, y + 0.5),
                                                                                  (x + 1.8, y + 0.5))
                arrow(ax, start, end)
    arrow(ax, (7.15, 2.6), (7.15, 1.85))
    note(ax, 0.2, 0.3, "The model itself does not change: all the new work is in the data and in judging free text.",
         fontsize=FONT - 1)
    return fig


CH07_MASK_ENTRY = 3  # a training entry (the first 935 entries are the training split)


def ch07_masking():
    import tiktoken

    module, data = ch07_entries()
    tokenizer = tiktoken.get_encoding("gpt2")
    entry = data[CH07_MASK_ENTRY]
    prompt_length = len(tokenizer.encode(module.format_prompt(entry)))
    example = module.InstructionDataset([entry], tokenizer)[0]
    longer = next(module.InstructionDataset([e], tokenizer)[0] for e in data if
                  len(module.InstructionDataset([e], tokenizer)[0]) == len(example) + 4)
    # without masking = "ignore" with the padding token itself, which leaves every target as it is
    options = [("without masking: every target counts,\nrepeated padding too (step 2)", module.END_OF_TEXT_ID),
               ("collate: padding after the first\nend-of-text is -100 (step 3)", module.IGNORE_INDEX)]
    fig, ax = canvas(8.4, 3.9)
    title(ax, 0.2, 3.65, f"Targets of entry {CH07_MASK_ENTRY} ({len(example)} tokens) in a batch with an entry 4 "
                         "tokens longer", fontsize=FONT)
    colors = {"prompt": "token", "answer": "target", "end": "id", "padding": "layer", "ignored": "masked"}
    for row, (name, ignore_index) in enumerate(options):
        _, targets = module.collate([example, longer], ignore_index=ignore_index)
        targets = targets[0].tolist()
        kinds = ["ignored" if value == module.IGNORE_INDEX else "prompt" if t < prompt_length - 1 else
                 "answer" if t < len(example) - 1 else "end" if t == len(example) - 1 else "padding"
                 for t, value in enumerate(targets)]
        cell = 7.9 / len(targets)
        y = 2.45 - row * 1.15
        note(ax, 0.2, y + 0.62, name, color=INK, fontsize=FONT - 1)
        for t, kind in enumerate(kinds):
            box(ax, 0.2 + t * cell, y, cell, 0.3, "", colors[kind], style="square")
        counted = len(kinds) - kinds.count("ignored")
        note(ax, 4.4, y + 0.62, f"{counted} of {len(targets)} target positions count in the loss", color=INK,
             fontsize=FONT - 1)
    legend = [("token", "prompt", 0.2), ("target", "answer", 1.35), ("id", "one end-of-text", 2.5),
              ("layer", "more padding (50256)", 4.15), ("masked", "-100: ignored", 6.4)]
    for color, text, x in legend:
        box(ax, x, 0.62, 0.3, 0.22, "", color, style="square")
        note(ax, x + 0.4, 0.73, text, color=INK, fontsize=FONT - 2)
    note(ax, 0.2, 0.2, "Each cell is one target position, coloured by the token it asks for. Exercise 7.2 tries a "
                       "third option: counting the answer only.", fontsize=FONT - 2)
    return fig


def ch07_evaluation_flow():
    metrics = load_module(ROOT / "ch07" / "metrics.py", "ch07_metrics")
    names = list(metrics.METRICS)  # the metrics section 7.8 reports
    fig, ax = canvas(8.4, 3.9)
    title(ax, 0.2, 3.65, "Scoring free-text responses: three judges of the same answers", fontsize=FONT + 1)
    box(ax, 0.2, 1.55, 1.9, 1.2, "test entry:\ninstruction, input,\nreference output\n+ model_response", "text",
        fontsize=FONT - 2)
    judges = [("reference metrics (metrics.py):\n" + ", ".join(names), "id",
               "cheap, repeatable; reward the\nreference's wording, not correctness"),
              ("reading the responses\nyourself", "token", "most trustworthy; slow, so\nonly for a handful"),
              ("a larger LLM as judge\n(llm_judge.py): score 0\u2013100", "vector",
               "scales to all entries; needs a\nlocal server and a larger model")]
    for k, (text, color, verdict) in enumerate(judges):
        y = 2.75 - k * 1.0
        box(ax, 2.7, y - 0.05, 2.85, 0.8, text, color, fontsize=FONT - 2)
        arrow(ax, (2.1, 2.15), (2.7, y + 0.35))
        note(ax, 5.7, y + 0.35, verdict, color=INK, fontsize=FONT - 2)
    note(ax, 0.2, 0.25, "Every entry gets each score; the summary is each score's mean over the test entries "
                        "(evaluate_responses.py).",
         fontsize=FONT - 1)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# appendix A


def appendix_a_computation_graph():
    import torch
    import torch.nn.functional as F

    x = torch.tensor([1.5, -0.5])  # appendix-A.ipynb, section A.3
    y = torch.tensor(1.0)
    w = torch.tensor([0.8, 0.3], requires_grad=True)
    b = torch.tensor(-0.2, requires_grad=True)
    z = x @ w + b
    a = torch.sigmoid(z)
    loss = F.binary_cross_entropy(a, y)
    grad_a, grad_z, grad_w, grad_b = torch.autograd.grad(loss, [a, z, w, b])
    fig, ax = canvas(8.4, 3.9)
    nodes = {"x": (0.2, 2.75, f"x = [{x[0]:.1f}, {x[1]:.1f}]", "token", None),
             "w": (0.2, 1.85, f"w = [{w[0]:.1f}, {w[1]:.1f}]", "train",
                   f"[{grad_w[0]:.4f}, {grad_w[1]:.4f}]"),
             "b": (0.2, 0.95, f"b = {b.item():.1f}", "train", f"{grad_b.item():.4f}"),
             "z": (2.75, 1.85, f"z = x \u00b7 w + b\n= {z.item():.2f}", "vector", f"{grad_z.item():.4f}"),
             "a": (4.55, 1.85, f"a = \u03c3(z)\n= {a.item():.4f}", "vector", f"{grad_a.item():.4f}"),
             "loss": (6.35, 1.85, f"loss = BCE(a, y)\n= {loss.item():.4f}", "target", "1")}
    for name, (x0, y0, text, color, grad) in nodes.items():
        width = 1.75 if name in "xwb" else 1.6
        box(ax, x0, y0, width, 0.65, text, color, fontsize=FONT - 1)
        if grad:
            note(ax, x0 + width / 2, y0 - 0.13,
                 f"\u2202loss/\u2202{name} = {grad}" if name != "loss" else "start: \u2202loss/\u2202loss = 1",
                 ha="center", color=COLORS["accent"], fontsize=FONT - 2)
    for src in "xwb":
        arrow(ax, (1.95, nodes[src][1] + 0.32), (2.75, 2.17))
    arrow(ax, (4.35, 2.17), (4.55, 2.17))
    arrow(ax, (6.15, 2.17), (6.35, 2.17))
    note(ax, 6.35, 2.75, f"y = {y.item():.0f} (label)", color=INK)
    note(ax, 2.75, 3.55, "forward (black), left to right; backward (orange): the gradients autograd computes",
         color=INK)
    note(ax, 0.2, 0.35, "green: leaves with requires_grad=True, where backward() stores .grad. "
                        "\u2202loss/\u2202z = a \u2212 y; \u2202loss/\u2202w = (a \u2212 y) x.", fontsize=FONT - 2)
    return fig


APPENDIX_A_LABELS = [0, 0, 0, 1, 1]  # the five hand-made examples of appendix-A.ipynb, section A.5


def appendix_a_dataloader():
    import torch
    from torch.utils.data import DataLoader

    fig, ax = canvas(8.4, 3.9)
    title(ax, 0.2, 3.65, "DataLoader(tiny, batch_size=2, shuffle=True, generator seeded 123): one epoch",
          fontsize=FONT)
    note(ax, 0.2, 3.25, "Dataset: 5 items", color=INK)
    for i, label in enumerate(APPENDIX_A_LABELS):
        box(ax, 0.2, 2.6 - i * 0.5, 1.9, 0.4, f"item {i}: label {label}", "token", fontsize=FONT - 2)
    for x0, drop_last in [(3.0, False), (5.7, True)]:
        # the loader draws indices; over range(5) it draws the same order as over the data set itself
        batches = [b.tolist() for b in DataLoader(range(5), batch_size=2, shuffle=True, drop_last=drop_last,
                                                  generator=torch.Generator().manual_seed(123))]
        note(ax, x0, 3.25, f"drop_last={drop_last}: {len(batches)} batches", color=INK)
        for k, indices in enumerate(batches):
            y = 2.5 - k * 0.75
            labels = [APPENDIX_A_LABELS[i] for i in indices]
            box(ax, x0, y, 2.4, 0.6, f"item{'s' * (len(indices) > 1)} {', '.join(map(str, indices))}\nlabels {labels}",
                "id" if len(indices) == 2 else "layer", fontsize=FONT - 2)
        if not drop_last:
            arrow(ax, (2.15, 1.65), (x0 - 0.05, 1.65))
    note(ax, 5.7, 0.55, "the incomplete last batch\nis dropped", color=INK, fontsize=FONT - 2)
    note(ax, 0.2, 0.2, "Each batch stacks its items: features (2, 2), labels (2,). A new shuffled order is drawn "
                       "every epoch.", fontsize=FONT - 1)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# the overview


def pipeline():
    fig, ax = canvas(8.4, 3.3)
    stages = [("Appendix A", "PyTorch\nbasics", "layer"),
              ("Chapter 2", "text \u2192 tokens\n\u2192 ids \u2192 vectors", "text"),
              ("Chapter 3", "attention:\nwhich tokens\nmatter", "token"),
              ("Chapter 4", "the GPT model\n(124M parameters)", "vector"),
              ("Chapter 5", "pretraining:\npredict the\nnext token", "id"),
              ("Chapter 6", "finetune to\nclassify\n(spam or not)", "target"),
              ("Chapter 7", "finetune to\nfollow\ninstructions", "target")]
    w, gap = 1.08, 0.1
    for k, (name, text, color) in enumerate(stages):
        x = 0.15 + k * (w + gap)
        box(ax, x, 1.05, w, 1.3, text, color, fontsize=FONT - 2)
        note(ax, x + w / 2, 2.55, name, ha="center", color=INK, fontsize=FONT - 1, fontweight="bold")
        if k:
            arrow(ax, (x - gap, 1.7), (x, 1.7))
    for x0, x1, label in [(1.33, 4.85, "build the model"), (4.87, 6.03, "pretraining"), (6.05, 8.35, "finetuning")]:
        ax.plot([x0 + 0.03, x1 - 0.03], [0.8, 0.8], color=EDGE, lw=1.2)
        note(ax, (x0 + x1) / 2, 0.55, label, ha="center", color=INK)
    note(ax, 0.15, 0.15, "A language model is built (2\u20134), pretrained on raw text (5), then finetuned for a task "
                         "(6, 7).", color=INK, fontsize=FONT - 1)
    title(ax, 0.15, 3.05, "How the course builds a GPT-style language model", fontsize=FONT + 1)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# where each diagram goes


@dataclass(frozen=True)
class Figure:
    name: str  # file name without .png, also the id of its notebook cell
    folder: str  # the chapter folder; the file is FOLDER/figures/NAME.png
    draw: object  # function returning a matplotlib figure
    caption: str  # alt text and the caption under the image
    notebook: str = ""  # notebook (relative to the folder) that embeds it; "" when a README shows it instead
    anchor: str = ""  # text of the markdown cell next to which the diagram goes
    after: bool = True  # after that cell, or before it

    @property
    def path(self):
        return ROOT / self.folder / "figures" / f"{self.name}.png"


FIGURES = [
    Figure("pipeline", ".", pipeline, "The course's stages, from PyTorch basics to finetuning"),
    Figure("text-to-vectors", "ch02", ch02_text_to_vectors,
           "Text becomes tokens, token ids and embedding vectors", "ch02.ipynb", "## 2.1 Why text", after=False),
    Figure("sliding-windows", "ch02", ch02_sliding_windows,
           "Input windows and their targets, shifted by one token", "ch02.ipynb", "## 2.7 Input–target pairs"),
    Figure("token-position-embeddings", "ch02", ch02_token_position_embeddings,
           "Token embeddings plus position embeddings give the input embeddings", "ch02.ipynb",
           "## 2.10 Encoding word positions"),
    Figure("attention-weights", "ch03", ch03_attention_weights,
           "Scores, attention weights and the context vector for the query \"guide\"", "ch03.ipynb",
           "### 3.2.1 Attention for one query"),
    Figure("qkv-projections", "ch03", ch03_qkv_projections,
           "Queries, keys and values are projections of the inputs", "ch03.ipynb", "## 3.3 Self-attention with"),
    Figure("causal-mask", "ch03", ch03_causal_mask,
           "The causal mask hides future tokens before the softmax", "ch03.ipynb", "## 3.4 Hiding future words"),
    Figure("multi-head", "ch03", ch03_multi_head,
           "Multi-head attention splits 768 features into 12 heads of 64 and concatenates them again", "ch03.ipynb",
           "### 3.5.2 Splitting heads by reshaping"),
    Figure("gpt-model", "ch04", ch04_gpt_model, "The GPT model from token ids to logits", "ch04.ipynb",
           "## 4.1 Coding an LLM architecture"),
    Figure("transformer-block", "ch04", ch04_transformer_block,
           "The transformer block: LayerNorm before each branch, GELU inside the feed forward, two shortcuts",
           "ch04.ipynb", "## 4.4 Adding shortcut connections"),
    Figure("training-loop", "ch05", ch05_training_loop, "The pretraining loop", "ch05.ipynb",
           "## 5.2 Training an LLM"),
    Figure("temperature-top-k", "ch05", ch05_temperature_top_k,
           "How temperature and top-k change the next-token distribution of the toy logits", "ch05.ipynb",
           "### 5.3.3 Modifying the text generation function", after=False),
    Figure("head-swap", "ch06", ch06_head_swap,
           "The classification head replaces GPT-2's output layer; the last block and final norm train too",
           "ch06.ipynb", "## 6.5 Adding a classification head"),
    Figure("last-token", "ch06", ch06_last_token, "Only the last token has seen the whole message", "ch06.ipynb",
           "### Why the last token?"),
    Figure("prompt-format", "ch07", ch07_prompt_format, "An entry in the Alpaca-style prompt format", "ch07.ipynb",
           "### 7.2.1 The prompt format"),
    Figure("collated-batch", "ch07", ch07_collated_batch,
           "A batch collated by collate(): padding, targets shifted by one, -100 where the loss ignores",
           "ch07.ipynb", "## 7.4 Creating data loaders", after=False),
    Figure("computation-graph", "appendix-A", appendix_a_computation_graph,
           "The computation graph of logistic regression, forward and backward", "appendix-A.ipynb",
           "## A.3 Autograd"),
    Figure("training-loop", "appendix-A", appendix_a_training_loop, "The training loop", "appendix-A.ipynb",
           "## A.6 The training loop"),
    Figure("dataloader", "appendix-A", appendix_a_dataloader,
           "The DataLoader of section A.5 on the five hand-made examples: shuffled batches of 2, with and without "
           "drop_last", "appendix-A.ipynb", "A `DataLoader` also takes `num_workers`", after=False),
    Figure("bpe-pieces", "ch02", ch02_bpe_pieces,
           "Byte pair encoding keeps frequent words whole and splits rare ones into known pieces", "ch02.ipynb",
           "## 2.6 Byte pair encoding"),
    Figure("layer-norm", "ch04", ch04_layer_norm,
           "The two rows of the example before and after layer normalization: each now has mean 0 and variance 1",
           "ch04.ipynb", "The layer-normalization module adds three details", after=False),
    Figure("parameter-budget", "ch04", ch04_parameter_budget,
           "Where GPT-2 small's parameters are: the parameter count of each component of GPTModel",
           "ch04.ipynb", "`GPTConfig(tie_embeddings=True)` builds the model"),
    Figure("greedy-loop", "ch04", ch04_greedy_loop, "Greedy decoding appends the top-scoring token and runs again",
           "ch04.ipynb", "## 4.7 Generating text"),
    Figure("cross-entropy", "ch05", ch05_cross_entropy,
           "Loss and perplexity as a function of the probability given to the correct token", "ch05.ipynb",
           "**Perplexity** is the exponential of the cross-entropy"),
    Figure("train-val-split", "ch05", ch05_train_val_split,
           "The training and validation parts of The Verdict, cut into windows of 256 tokens", "ch05.ipynb",
           "Only 4,608 tokens for training", after=False),
    Figure("two-finetunings", "ch06", ch06_two_finetunings,
           "Classification finetuning and instruction finetuning side by side", "ch06.ipynb",
           "## 6.1 Different categories of finetuning"),
    Figure("dataset-split", "ch06", ch06_dataset_split,
           "The SMS Spam Collection balanced and split into training, validation and test messages", "ch06.ipynb",
           "## 6.3 Creating data loaders", after=False),
    Figure("padding", "ch06", ch06_padding,
           "The first training batch: message tokens, padding, and the last position the classifier reads",
           "ch06.ipynb", "## 6.4 Initializing a model with pretrained weights", after=False),
    Figure("classification-loss", "ch06", ch06_classification_loss,
           "From a batch of messages to the classification loss and the accuracy", "ch06.ipynb",
           "## 6.6 Calculating the classification loss and accuracy"),
    Figure("finetuning-pipeline", "ch07", ch07_pipeline, "The steps of instruction finetuning in this chapter",
           "ch07.ipynb", "## 7.1 Introduction to instruction finetuning"),
    Figure("masking", "ch07", ch07_masking,
           "Which target positions count in the loss, without masking and with collate's -100 for repeated padding",
           "ch07.ipynb", "The masking is done by position"),
    Figure("evaluation-flow", "ch07", ch07_evaluation_flow,
           "Three ways of scoring the same free-text responses", "ch07.ipynb",
           "## 7.8 Scoring the responses against the reference answers"),
]


def describe(fig):
    """What ``fig`` shows, independent of how a matplotlib version turns it into pixels.

    A list with, in drawing order, every visible text (string, anchor point, size, colour, alignment, weight), every
    patch's outline and colours (arrows included), every line's points, and each visible axis's ticks and tick
    labels; positions in inches from the figure's lower-left corner, rounded to 0.01 inch (one pixel at 100 dpi).
    Nothing in it depends on glyph shapes or text measurements, which change with matplotlib and FreeType versions;
    the diagrams therefore place everything explicitly (no tight_layout).
    """
    fig.canvas.draw()  # places ticks and spines
    to_inches = fig.dpi_scale_trans.inverted()

    def points(transform, xy):
        return [[round(float(v), 2) for v in point] for point in (transform + to_inches).transform(xy)]

    def colour(value):
        return to_hex(value, keep_alpha=True)

    def visit(artist, items):
        if not artist.get_visible() or id(artist) in hidden:
            return
        if isinstance(artist, Axes):  # what ax.axis("off") or a frameless axes does not draw
            if not (artist.axison and artist.get_frame_on()):
                hidden.update(map(id, [artist.patch, *artist.spines.values()]))
            if not artist.axison:
                hidden.update(id(axis) for axis in (artist.xaxis, artist.yaxis))
        if isinstance(artist, Axis):
            low, high = sorted(artist.get_view_interval())
            ticks = [[round(float(loc), 6), label.get_text() if label.get_visible() else None]
                     for loc, label in zip(artist.get_majorticklocs(), artist.get_majorticklabels())
                     if low - 1e-9 <= loc <= high + 1e-9]
            items.append(["axis", artist.axis_name, ticks, artist.label.get_text()])
            return
        if isinstance(artist, Text):
            if artist.get_text():
                bbox = artist.get_bbox_patch()
                items.append(["text", artist.get_text(), points(artist.get_transform(),
                                                               [artist.get_unitless_position()])[0],
                              artist.get_fontsize(), colour(artist.get_color()), artist.get_horizontalalignment(),
                              artist.get_verticalalignment(), str(artist.get_fontweight()), artist.get_rotation(),
                              bbox and [colour(bbox.get_facecolor()), colour(bbox.get_edgecolor())]])
        elif isinstance(artist, Patch):  # boxes, bars, spines, and the arrows of annotations (their children)
            items.append([type(artist).__name__, points(artist.get_transform(), artist.get_path().vertices),
                          colour(artist.get_facecolor()) if artist.get_fill() else None,
                          colour(artist.get_edgecolor()), artist.get_linewidth()])
        elif isinstance(artist, Line2D):
            items.append(["line", points(artist.get_transform(), artist.get_xydata()), colour(artist.get_color()),
                          artist.get_linewidth(), artist.get_linestyle(), artist.get_marker()])
        elif isinstance(artist, Collection) and len(artist.get_paths()):
            raise ValueError("describe() does not know collections yet: add them before a diagram uses one")
        for child in artist.get_children():
            visit(child, items)

    hidden = set()
    items = [["figure", [round(float(v), 2) for v in fig.get_size_inches()]]]
    for child in fig.get_children():
        visit(child, items)
    return items


def render(figure, path):
    """Draw ``figure`` and save it as a PNG at ``path``, with ``describe()`` of it in the PNG's text chunks.

    The file holds no timestamp, only the matplotlib version it was drawn with (``matplotlib``) and the description
    (``diagram``), which tests/test_diagrams.py compares with a fresh drawing.
    """
    fig = figure.draw()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, facecolor="white")
    description = json.dumps(describe(fig), separators=(",", ":"), ensure_ascii=False)
    plt.close(fig)
    # a palette of at most 128 colours keeps the files small (anti-aliased edges need a few shades per colour)
    image = Image.open(buffer).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT,
                                                       dither=Image.Dither.NONE)
    info = PngImagePlugin.PngInfo()
    info.add_text("matplotlib", matplotlib.__version__)
    info.add_text("diagram", description, zip=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True, pnginfo=info)


def recorded(path):
    """The matplotlib version and the description that ``render`` stored in the PNG at ``path``."""
    with Image.open(path) as image:
        chunks = image.text
    return chunks.get("matplotlib"), json.loads(chunks.get("diagram", "null"))


def cell_id(figure):
    return f"figure-{figure.name}"


def figure_cell(figure, png):
    """The markdown cell that shows ``png`` (bytes) with its caption."""
    data = base64.b64encode(png).decode("ascii")
    return {"cell_type": "markdown", "id": cell_id(figure), "metadata": {},
            "source": [f"![{figure.caption}](data:image/png;base64,{data})\n", "\n",
                       f"*{figure.caption}. (Drawn by `tools/diagrams.py`; the file is "
                       f"`figures/{figure.name}.png`.)*"]}


def place(figure, png):
    """Insert or update the figure's cell in its notebook; return True if the notebook changed."""
    path = ROOT / figure.folder / figure.notebook
    text = path.read_text(encoding="utf-8")
    notebook = json.loads(text)
    cells = notebook["cells"]
    cell = figure_cell(figure, png)
    existing = [i for i, c in enumerate(cells) if c.get("id") == cell["id"]]
    if existing:
        cells[existing[0]] = cell
    else:
        matches = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                   and any(line.startswith(figure.anchor) for line in "".join(c["source"]).splitlines())]
        if len(matches) != 1:
            raise ValueError(f"{path}: {len(matches)} markdown cells have a line starting with {figure.anchor!r}")
        cells.insert(matches[0] + figure.after, cell)
    new_text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if new_text != text:
        path.write_text(new_text, encoding="utf-8")
    return new_text != text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="only these figures (folder/name, e.g. ch03/causal-mask)")
    args = parser.parse_args(argv)
    for figure in FIGURES:
        if args.names and f"{figure.folder}/{figure.name}" not in args.names:
            continue
        render(figure, figure.path)
        png = figure.path.read_bytes()
        changed = figure.notebook and place(figure, png)
        print(f"{figure.folder}/figures/{figure.name}.png: {len(png) / 1000:.0f} kB"
              + (f", {figure.notebook} updated" if changed else ""))


if __name__ == "__main__":
    main()
