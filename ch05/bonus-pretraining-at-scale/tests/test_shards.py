"""The shard writer and the window loader: contents, split, resumption, rank shares and every bad-input error."""

import hashlib
import json
import random
import sys

import numpy as np
import pytest
import tiktoken

import shards
from shards import CorpusError, TokenWindows, build_shards, in_validation

WORDS = "the a model token reads writes learns every window shard text of and to in train split".split()


def write_corpus(folder, documents=30, seed=0):
    """Plain-text files of random words; returns their texts in the order the builder reads them."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for i in range(documents):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + "."
        (folder / f"doc{i:03d}.txt").write_text(text, encoding="utf-8")
        texts.append(text)
    return texts


def build(inputs, out, **kwargs):
    return build_shards(inputs, out, val_fraction=kwargs.pop("val_fraction", 0.3), workers=2, progress=False,
                        **kwargs)


def shard_tokens(folder, split):
    index = json.loads((folder / "index.json").read_text())
    return np.concatenate([np.fromfile(folder / s["file"], dtype=np.uint16)
                           for s in index["shards"] if s["split"] == split])


def test_shards_hold_every_document_once_with_an_end_marker_in_its_split(tmp_path):
    texts = write_corpus(tmp_path / "corpus")
    index = build([tmp_path / "corpus"], tmp_path / "out", shard_tokens=300)
    encoding = tiktoken.get_encoding("gpt2")
    assert index["complete"] and index["tokenizer"] == "gpt2" and index["documents"] == len(texts)
    assert sum(s["split"] == "train" for s in index["shards"]) > 1  # small shards: several of them
    for shard in index["shards"]:
        data = (tmp_path / "out" / shard["file"]).read_bytes()
        assert len(data) == 2 * shard["tokens"] and hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert all(source.endswith(".txt") for source in shard["sources"])
    for split in ("train", "val"):
        pieces = encoding.decode(shard_tokens(tmp_path / "out", split).tolist()).split("<|endoftext|>")
        expected = [t for t in texts if in_validation(t, 0.3) == (split == "val")]
        assert pieces == expected + [""]  # whole documents, in order, each ended by <|endoftext|>
    assert 0 < len([t for t in texts if in_validation(t, 0.3)]) < len(texts)


def test_an_interrupted_build_resumes_to_the_same_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "BATCH_DOCUMENTS", 4)  # so that shards are written before the bad file is read
    write_corpus(tmp_path / "corpus")
    (tmp_path / "corpus" / "doc020.txt").write_bytes(b"caf\xe9 au lait")  # Latin-1, not UTF-8: the build stops
    with pytest.raises(CorpusError, match=r"doc020\.txt: not UTF-8 text: byte 0xe9 at byte offset 3"):
        build([tmp_path / "corpus"], tmp_path / "resumed", shard_tokens=300)
    partial = json.loads((tmp_path / "resumed" / "index.json").read_text())
    assert not partial["complete"] and 0 < partial["documents"] < 20  # the shards written before it are kept
    with pytest.raises(CorpusError, match="interrupted"):
        TokenWindows(tmp_path / "resumed", "train", 8)
    (tmp_path / "corpus" / "doc020.txt").write_text("café au lait", encoding="utf-8")
    resumed = build([tmp_path / "corpus"], tmp_path / "resumed", shard_tokens=300)
    fresh = build([tmp_path / "corpus"], tmp_path / "fresh", shard_tokens=300)
    assert [(s["file"], s["sha256"]) for s in resumed["shards"]] == [(s["file"], s["sha256"]) for s in fresh["shards"]]
    assert not list((tmp_path / "resumed").glob("*.tmp"))


def test_a_finished_folder_rebuilt_with_other_settings_is_refused(tmp_path):
    write_corpus(tmp_path / "corpus", documents=5)
    build([tmp_path / "corpus"], tmp_path / "out")
    with pytest.raises(CorpusError, match="other settings"):
        build([tmp_path / "corpus"], tmp_path / "out", val_fraction=0.5)


def test_jsonl_documents_and_their_errors(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"body": "first document"}\n\n{"body": "second one"}\n', encoding="utf-8")
    index = build([good], tmp_path / "out", text_field="body", val_fraction=0.0)
    assert index["documents"] == 2
    decoded = tiktoken.get_encoding("gpt2").decode(shard_tokens(tmp_path / "out", "train").tolist())
    assert decoded == "first document<|endoftext|>second one<|endoftext|>"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "fine"}\n{"title": "no body"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.jsonl line 2: no 'body' field \(found: \['title'\]\)"):
        build([bad], tmp_path / "bad", text_field="body")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"broken\.jsonl line 2: not valid JSON"):
        build([broken], tmp_path / "broken")


def test_an_empty_corpus_is_refused(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "blank.txt").write_text("  \n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="empty corpus: no text found"):
        build([tmp_path / "corpus"], tmp_path / "out")
    with pytest.raises(CorpusError, match="no such file or folder"):
        build([tmp_path / "missing"], tmp_path / "out2")


def test_a_split_shorter_than_one_window_is_refused(tmp_path):
    write_corpus(tmp_path / "corpus", documents=10)
    build([tmp_path / "corpus"], tmp_path / "out")
    val_tokens = len(shard_tokens(tmp_path / "out", "val"))
    TokenWindows(tmp_path / "out", "val", val_tokens - 1)  # exactly one window fits
    with pytest.raises(CorpusError, match=f"val split holds {val_tokens} tokens .* fewer than one window"):
        TokenWindows(tmp_path / "out", "val", val_tokens)


def test_shards_of_another_tokenizer_or_damaged_shards_are_refused(tmp_path):
    write_corpus(tmp_path / "corpus", documents=5)
    build([tmp_path / "corpus"], tmp_path / "out")
    with pytest.raises(CorpusError, match="written by the 'gpt2' tokenizer, but this model uses 'cl100k_base'"):
        TokenWindows(tmp_path / "out", "train", 8, tokenizer="cl100k_base")
    with open(tmp_path / "out" / "train_00000.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(CorpusError, match=r"train_00000\.bin: .* bytes, but the index lists"):
        TokenWindows(tmp_path / "out", "train", 8)


def test_windows_are_shard_slices_and_the_ranks_share_a_step_without_overlap(tmp_path):
    write_corpus(tmp_path / "corpus", documents=40)
    build([tmp_path / "corpus"], tmp_path / "out", shard_tokens=200)
    windows = TokenWindows(tmp_path / "out", "train", 16)
    tokens = shard_tokens(tmp_path / "out", "train")
    assert len(windows.shards) > 2 and windows.tokens == len(tokens)
    everything = windows.windows(np.arange(len(windows)))
    assert everything.shape == (len(windows), 17)
    starts = [bytes(tokens[i:i + 17]) for i in range(len(tokens) - 16)]
    assert all(bytes(w.astype(np.uint16)) in starts for w in everything)  # each is 17 consecutive tokens
    assert len({bytes(w.astype(np.uint16)) for w in everything}) > 0.9 * len(windows)
    step = windows.sample(seed=1, step=5, count=12)
    assert (step == windows.sample(seed=1, step=5, count=12)).all()  # the step fixes the windows
    assert not (step == windows.sample(seed=1, step=6, count=12)).all()
    for world_size in (2, 3):
        shares = [windows.sample(1, 5, 12, rank, world_size) for rank in range(world_size)]
        assert all(len(share) == 12 // world_size for share in shares)
        rows = np.empty_like(step)
        for rank, share in enumerate(shares):
            rows[rank::world_size] = share
        assert (rows == step).all()  # disjoint shares that together are the one-process batch


def test_streaming_from_hugging_face_without_the_datasets_package_is_explained(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed: importing it fails
    with pytest.raises(CorpusError, match="needs the datasets package \\(pip install datasets\\)"):
        build([], tmp_path / "out", hf_dataset="roneneldan/TinyStories")
