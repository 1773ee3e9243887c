"""Turn a text corpus into token shards for pretraining, and sample training windows from them.

Building::

    python shards.py /usr/share/doc/python3.11/html/_sources --out data/python-docs
    python shards.py notes.jsonl more.parquet --text-field body --out data/mine
    python shards.py --hf-dataset roneneldan/TinyStories --max-documents 200000 --out data/tinystories

Each plain-text file is one document (or several, with ``--doc-separator``); each line of a ``.jsonl`` file and
each row of a ``.parquet`` file is one, its text in ``--text-field``; a Hugging Face dataset is streamed (this
needs the ``datasets`` package and the network). Worker processes tokenize the documents with tiktoken, and every
document ends with ``<|endoftext|>``, so the model learns where one text stops. A document goes to the validation
split when a hash of its text says so (``--val-fraction``): the split is the same whatever the order of the files.

The output folder holds shards (``train_00000.bin``, ``val_00000.bin``, ...: raw uint16 token ids, two bytes
each, which GPT-2's 50,257 ids fit) and ``index.json``: the tokenizer, the settings, and for each shard its token
count, the sources it came from and its sha256. Every file is written under a temporary name and renamed when
complete, and the index is rewritten after each pair of shards; an interrupted build, run again with the same
command, skips the documents already written and carries on.

Reading: ``TokenWindows`` maps a split's shards into memory with ``np.memmap`` (nothing is read until a window is
used) and draws random windows of ``context_length + 1`` tokens; the windows of a training step depend only on the
seed and the step, and each process of a distributed run takes its own slice of them.
"""

import argparse
import hashlib
import importlib
import json
import os
from contextlib import contextmanager
from itertools import islice
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import tiktoken
from tqdm import tqdm

INDEX_NAME = "index.json"
SHARD_DTYPE = np.uint16
BATCH_DOCUMENTS = 1024  # documents read, then tokenized by the workers, at a time


class CorpusError(ValueError):
    """Input that cannot be made into, or read as, token shards; the message says which file and why."""


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; when the block succeeds, rename it to ``path`` in one step.

    A reader sees either the old file or the complete new one, never a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def read_text(path):
    """The UTF-8 text of ``path``; undecodable bytes raise a CorpusError naming the file and the byte offset."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path}: not UTF-8 text: byte {data[error.start]:#04x} at byte offset {error.start} "
                          f"cannot be decoded ({error.reason}); convert the file to UTF-8 first") from None


def optional_module(module, package, purpose):
    """Import a module only some inputs need (so the course does not require it), or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CorpusError(f"{purpose} needs the {package} package (pip install {package})") from None


def field_text(record, text_field, where):
    if not isinstance(record, dict) or text_field not in record:
        found = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise CorpusError(f"{where}: no {text_field!r} field (found: {found}); choose the field with --text-field")
    if not isinstance(record[text_field], str):
        raise CorpusError(f"{where}: the {text_field!r} field holds {type(record[text_field]).__name__}, not text")
    return record[text_field]


def file_documents(path, text_field, doc_separator):
    """Yield the documents of one file: the lines of .jsonl, the rows of .parquet, else the file's text."""
    if path.suffix == ".jsonl":
        for number, line in enumerate(read_text(path).splitlines(), start=1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise CorpusError(f"{path} line {number}: not valid JSON ({error.msg})") from None
                yield field_text(record, text_field, f"{path} line {number}")
    elif path.suffix == ".parquet":
        table = optional_module("pyarrow.parquet", "pyarrow", f"{path}: reading .parquet files").read_table(path)
        if text_field not in table.column_names:
            raise CorpusError(f"{path}: no {text_field!r} column (found: {table.column_names}); "
                              "choose it with --text-field")
        yield from (text for text in table.column(text_field).to_pylist() if isinstance(text, str))
    else:
        text = read_text(path)
        yield from (text.split(doc_separator) if doc_separator else [text])


def hf_documents(name, config, split, text_field):
    """Stream the documents of a Hugging Face dataset (needs the ``datasets`` package and the network)."""
    datasets = optional_module("datasets", "datasets", f"streaming the Hugging Face dataset {name!r}")
    try:
        rows = datasets.load_dataset(name, config, split=split, streaming=True)
        for number, row in enumerate(rows):
            yield field_text(row, text_field, f"{name} row {number}")
    except CorpusError:
        raise
    except Exception as error:  # the library raises many kinds (offline, unknown name, no such split)
        raise CorpusError(f"could not stream the Hugging Face dataset {name!r} (split {split!r}): {error}") from error


def corpus_documents(inputs, text_field="text", doc_separator=None, hf_dataset=None, hf_config=None,
                     hf_split="train"):
    """Yield ``(source, text)`` for every non-empty document, files in sorted order, folders searched recursively."""
    for item in map(Path, inputs):
        if not item.exists():
            raise CorpusError(f"{item}: no such file or folder")
        files = sorted(p for p in item.rglob("*") if p.is_file() and not p.name.startswith(".")) \
            if item.is_dir() else [item]
        for path in files:
            for text in file_documents(path, text_field, doc_separator):
                if text.strip():
                    yield str(path), text
    if hf_dataset:
        for text in hf_documents(hf_dataset, hf_config, hf_split, text_field):
            if text.strip():
                yield f"hf:{hf_dataset}", text


def in_validation(text, val_fraction):
    """True for about ``val_fraction`` of all documents, decided by a hash of the text (order does not matter)."""
    fraction = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2 ** 64
    return fraction < val_fraction


def _start_worker(tokenizer, val_fraction):
    global _encoding, _val_fraction
    _encoding, _val_fraction = tiktoken.get_encoding(tokenizer), val_fraction


def _tokenize(text):
    """In a worker process: the document's split and its token ids followed by <|endoftext|>."""
    ids = _encoding.encode_ordinary(text)
    ids.append(_encoding.eot_token)
    return ("val" if in_validation(text, _val_fraction) else "train"), np.array(ids, dtype=SHARD_DTYPE)


def write_index(folder, index):
    write_atomic(Path(folder) / INDEX_NAME, json.dumps(index, indent=1).encode("utf-8"))


def build_shards(inputs, out, tokenizer="gpt2", text_field="text", doc_separator=None, val_fraction=0.01,
                 shard_tokens=50_000_000, workers=None, hf_dataset=None, hf_config=None, hf_split="train",
                 max_documents=None, progress=True):
    """Tokenize the corpus into ``out`` (see the module's docstring) and return the finished index."""
    encoding = tiktoken.get_encoding(tokenizer)
    if encoding.n_vocab > np.iinfo(SHARD_DTYPE).max + 1:
        raise CorpusError(f"tokenizer {tokenizer!r} has {encoding.n_vocab} ids, more than uint16 shards can hold")
    if not inputs and not hf_dataset:
        raise CorpusError("no input: give files or folders, or --hf-dataset NAME")
    out = Path(out)
    settings = {"inputs": [str(Path(p).resolve()) for p in inputs], "text_field": text_field,
                "doc_separator": doc_separator, "val_fraction": val_fraction, "shard_tokens": shard_tokens,
                "hf_dataset": hf_dataset, "hf_config": hf_config, "hf_split": hf_split,
                "max_documents": max_documents}
    index_path = out / INDEX_NAME
    if index_path.exists():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index["settings"] != settings or index["tokenizer"] != tokenizer:
            raise CorpusError(f"{out} holds shards built with other settings ({index['settings']}, tokenizer "
                              f"{index['tokenizer']!r}); choose another --out folder or delete this one")
        if index["complete"]:
            return index
    else:
        out.mkdir(parents=True, exist_ok=True)
        index = {"tokenizer": tokenizer, "eot_token": encoding.eot_token, "dtype": "uint16", "settings": settings,
                 "documents": 0, "complete": False, "shards": []}
    done = index["documents"]  # documents already in shards: skipped when an interrupted build is resumed
    buffers, sources = {"train": [], "val": []}, {"train": set(), "val": set()}

    def flush(documents):
        for split, arrays in buffers.items():
            if arrays:
                tokens = np.concatenate(arrays)
                name = f"{split}_{sum(s['split'] == split for s in index['shards']):05d}.bin"
                write_atomic(out / name, tokens.tobytes())
                index["shards"].append({"file": name, "split": split, "tokens": len(tokens),
                                        "sha256": hashlib.sha256(tokens.tobytes()).hexdigest(),
                                        "sources": sorted(sources[split])})
                arrays.clear()
                sources[split].clear()
        index["documents"] = documents
        write_index(out, index)

    documents = corpus_documents(inputs, text_field, doc_separator, hf_dataset, hf_config, hf_split)
    new = islice(documents, done, max_documents)  # (source, text) of the documents not yet in shards
    count, pending = done, 0  # documents seen; training tokens not yet in a shard
    with Pool(workers or os.cpu_count(), initializer=_start_worker, initargs=(tokenizer, val_fraction)) as pool, \
            tqdm(desc="documents", unit="doc", initial=done, disable=not progress) as bar:
        while batch := list(islice(new, BATCH_DOCUMENTS)):  # a huge stream is never all in memory
            for (source, _), (split, ids) in zip(batch, pool.imap(_tokenize, [text for _, text in batch], 8)):
                buffers[split].append(ids)
                sources[split].add(source)
                count += 1
                pending += len(ids) if split == "train" else 0
                if pending >= shard_tokens:
                    flush(count)
                    pending = 0
            bar.update(len(batch))
    if count == 0:
        raise CorpusError(f"empty corpus: no text found in {', '.join(map(str, inputs)) or hf_dataset}")
    flush(count)
    index["complete"] = True
    write_index(out, index)
    return index


def read_index(folder, tokenizer):
    """The index of a finished build, checked to be made with ``tokenizer``."""
    path = Path(folder) / INDEX_NAME
    if not path.exists():
        raise CorpusError(f"{folder}: no {INDEX_NAME}; build the shards first with shards.py")
    index = json.loads(path.read_text(encoding="utf-8"))
    if not index["complete"]:
        raise CorpusError(f"{folder}: the build was interrupted; run the same shards.py command again to finish it")
    if index["tokenizer"] != tokenizer:
        raise CorpusError(f"{folder}: the shards were written by the {index['tokenizer']!r} tokenizer, but this model "
                          f"uses {tokenizer!r}; their token ids mean other things: rebuild with --tokenizer "
                          f"{tokenizer}")
    return index


class TokenWindows:
    """Random windows of ``context_length + 1`` consecutive tokens from one split's shards, read via np.memmap.

    Window number ``n`` (0 <= n < len(self)) starts at the n-th possible start position counted across the shards;
    a window never spans two shards."""

    def __init__(self, folder, split, context_length, tokenizer="gpt2"):
        folder = Path(folder)
        entries = [s for s in read_index(folder, tokenizer)["shards"] if s["split"] == split]
        self.window = context_length + 1
        self.shards = []
        for entry in entries:
            path = folder / entry["file"]
            size = path.stat().st_size if path.exists() else 0
            if size != entry["tokens"] * SHARD_DTYPE().itemsize:
                raise CorpusError(f"{path}: {size} bytes, but the index lists {entry['tokens']} tokens; the shard is "
                                  "missing or damaged: rebuild the folder")
            self.shards.append(np.memmap(path, dtype=SHARD_DTYPE, mode="r"))
        starts_per_shard = [max(len(s) - self.window + 1, 0) for s in self.shards]
        self.first_number = np.cumsum([0] + starts_per_shard)  # window numbers where each shard begins
        self.tokens = sum(len(s) for s in self.shards)
        if len(self) == 0:
            raise CorpusError(f"{folder}: the {split} split holds {self.tokens} tokens in {len(self.shards)} shard(s), "
                              f"fewer than one window of {self.window} tokens (context length + 1); use a larger "
                              "corpus, a larger --val-fraction or a shorter context length")

    def __len__(self):
        return int(self.first_number[-1])

    def windows(self, numbers):
        """The windows with these numbers, as an int64 array (len(numbers), context_length + 1)."""
        shard_of = np.searchsorted(self.first_number, numbers, side="right") - 1
        offsets = np.asarray(numbers) - self.first_number[shard_of]
        return np.stack([self.shards[s][o:o + self.window] for s, o in zip(shard_of, offsets)]).astype(np.int64)

    def sample(self, seed, step, count, rank=0, world_size=1):
        """This process's share of the ``count`` random windows of ``step``: rows ``rank``, ``rank + world_size``...

        The ``count`` window numbers depend only on ``seed`` and ``step``, so every process count sees the same
        windows in total, the ranks' shares are disjoint, and a resumed run draws what it would have drawn."""
        numbers = np.random.default_rng([seed, step]).integers(0, len(self), size=count)
        return self.windows(numbers[rank::world_size])


def main(argv=None):
    parser = argparse.ArgumentParser(description="Tokenize a corpus into uint16 token shards with an index.")
    parser.add_argument("inputs", nargs="*", help="text files, .jsonl/.parquet files, or folders of them")
    parser.add_argument("--out", required=True, help="folder for the shards and index.json")
    parser.add_argument("--tokenizer", default="gpt2", help="tiktoken encoding (default: gpt2)")
    parser.add_argument("--text-field", default="text", help="the text field of .jsonl/.parquet/HF records")
    parser.add_argument("--doc-separator", default=None,
                        help="split plain-text files into documents at this string (e.g. a blank line)")
    parser.add_argument("--val-fraction", type=float, default=0.01, help="share of documents for validation")
    parser.add_argument("--shard-tokens", type=int, default=50_000_000, help="training tokens per shard")
    parser.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: one per CPU)")
    parser.add_argument("--hf-dataset", help="a Hugging Face dataset to stream, e.g. roneneldan/TinyStories")
    parser.add_argument("--hf-config", help="the dataset's configuration (subset), if it has several")
    parser.add_argument("--hf-split", default="train")
    parser.add_argument("--max-documents", type=int, default=None, help="stop after this many documents")
    args = parser.parse_args(argv)
    separator = args.doc_separator.encode().decode("unicode_escape") if args.doc_separator else None
    try:
        index = build_shards(args.inputs, args.out, args.tokenizer, args.text_field, separator, args.val_fraction,
                             args.shard_tokens, args.workers, args.hf_dataset, args.hf_config, args.hf_split,
                             args.max_documents)
    except CorpusError as error:
        parser.exit(1, f"error: {error}\n")
    for split in ("train", "val"):
        tokens = sum(s["tokens"] for s in index["shards"] if s["split"] == split)
        shards = sum(s["split"] == split for s in index["shards"])
        print(f"{split}: {tokens:,} tokens in {shards} shard(s)")
    print(f"{index['documents']:,} documents; index: {Path(args.out) / INDEX_NAME}")


if __name__ == "__main__":
    main()
