"""Tests of chapter 2's text pipeline: splitting, vocabularies, tokenizers, windows, loaders, the download.

The data comes from the course mirror (LLM_COURSE_MIRROR) and GPT-2's BPE files from TIKTOKEN_CACHE_DIR, so
the tests run offline; tiktoken serves as the independent reference for token ids.
"""

import math

import pytest
import tiktoken
import torch

from download import MIRROR_ENV, DownloadError, mirror_path
from text_data import (
    VERDICT_URL,
    GPTDataset,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    build_vocab,
    create_dataloader,
    load_verdict,
    split_words,
)

SENTENCE = '"It\'s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'


@pytest.fixture(scope="module")
def gpt2():
    return tiktoken.get_encoding("gpt2")


@pytest.fixture(scope="module")
def verdict(tmp_path_factory):
    return load_verdict(tmp_path_factory.mktemp("data") / "the-verdict.txt")


@pytest.fixture(scope="module")
def verdict_ids(verdict, gpt2):
    return gpt2.encode(verdict)


# ---------------------------------------------------------------- load_verdict


def test_verdict_has_the_published_size(verdict, verdict_ids):
    assert verdict.startswith("I HAD always thought Jack Gisburn rather a cheap genius")
    assert len(verdict) == 20_479
    assert len(verdict_ids) == 5_145


def test_load_verdict_rejects_a_corrupt_mirror_copy_and_writes_nothing(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    bad = mirror_path(mirror, VERDICT_URL)
    bad.parent.mkdir(parents=True)
    bad.write_text("I HAD always thought Jack Gisburn rather a cheap genius (tampered)", encoding="utf-8")
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    dest = tmp_path / "out" / "the-verdict.txt"
    with pytest.raises(DownloadError, match="Checksum mismatch"):
        load_verdict(dest)
    assert list(dest.parent.iterdir()) == []


def test_load_verdict_replaces_a_corrupt_local_file(tmp_path, verdict):
    dest = tmp_path / "the-verdict.txt"
    dest.write_text(verdict[:1000], encoding="utf-8")
    assert load_verdict(dest) == verdict
    assert len(dest.read_text(encoding="utf-8")) == 20_479


# ---------------------------------------------------------------- split_words and build_vocab


def test_split_words_separates_punctuation_and_drops_whitespace():
    assert split_words("Hello, world. Is this-- a test?") == \
        ["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"]
    assert split_words("It's (really)\n\tfine_ok!") == ["It", "'", "s", "(", "really", ")", "fine", "_", "ok", "!"]
    assert split_words("  \n ") == []


def test_split_words_keeps_hyphenated_words_and_special_tokens_whole():
    assert split_words("a well-known <|endoftext|> end") == ["a", "well-known", "<|endoftext|>", "end"]


def test_split_words_on_the_verdict(verdict):
    words = split_words(verdict)
    assert len(words) == 4_690
    assert len(set(words)) == 1_130


def test_build_vocab_sorts_deduplicates_and_appends_special_tokens():
    vocab = build_vocab(["b", "a", "c", "a", "b"], special_tokens=["<|endoftext|>", "<|unk|>"])
    assert vocab == {"a": 0, "b": 1, "c": 2, "<|endoftext|>": 3, "<|unk|>": 4}
    assert build_vocab([]) == {}


# ---------------------------------------------------------------- the word-level tokenizers


@pytest.fixture(scope="module")
def verdict_vocab(verdict):
    return build_vocab(split_words(verdict), special_tokens=[SimpleTokenizerV2.END_OF_TEXT, SimpleTokenizerV2.UNKNOWN])


def test_v1_round_trips_text_with_ordinary_spacing():
    text = "Hello, world. Is this a test? Yes!"
    tokenizer = SimpleTokenizerV1(build_vocab(split_words(text)))
    ids = tokenizer.encode(text)
    assert len(ids) == len(split_words(text))
    assert tokenizer.decode(ids) == text


def test_v1_round_trips_the_words_of_the_verdict(verdict, verdict_vocab):
    tokenizer = SimpleTokenizerV1(verdict_vocab)
    ids = tokenizer.encode(SENTENCE)
    assert [tokenizer.int_to_str[i] for i in ids] == split_words(SENTENCE)
    assert split_words(tokenizer.decode(ids)) == split_words(SENTENCE)
    assert split_words(tokenizer.decode(tokenizer.encode(verdict))) == split_words(verdict)


def test_v1_rejects_unknown_words_by_name(verdict_vocab):
    with pytest.raises(KeyError, match=r"not in the vocabulary: \['Hello', 'palace'\]"):
        SimpleTokenizerV1(verdict_vocab).encode("Hello, do you like tea in the palace?")


def test_v2_marks_unknown_words_and_keeps_end_of_text(verdict_vocab):
    tokenizer = SimpleTokenizerV2(verdict_vocab)
    ids = tokenizer.encode("Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace.")
    unk, eot = verdict_vocab["<|unk|>"], verdict_vocab["<|endoftext|>"]
    assert (unk, eot) == (1131, 1130)
    assert ids.count(unk) == 2 and ids[0] == unk and ids[-2] == unk
    assert ids.count(eot) == 1
    assert tokenizer.decode(ids) == \
        "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."


def test_v2_encodes_known_words_like_v1(verdict_vocab):
    assert SimpleTokenizerV2(verdict_vocab).encode(SENTENCE) == SimpleTokenizerV1(verdict_vocab).encode(SENTENCE)


# ---------------------------------------------------------------- GPT-2 BPE (tiktoken)


def test_bpe_ids_of_a_known_sentence(gpt2):
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
    ids = gpt2.encode(text, allowed_special={"<|endoftext|>"})
    assert ids == [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 617,
                   34680, 27271, 13]
    assert gpt2.decode(ids) == text


def test_bpe_refuses_end_of_text_unless_allowed(gpt2):
    with pytest.raises(ValueError, match="disallowed special token"):
        gpt2.encode("one <|endoftext|> two")


def test_bpe_splits_unknown_words_into_known_pieces(gpt2):
    ids = gpt2.encode("Akwirw ier")
    pieces = [gpt2.decode([i]) for i in ids]
    assert len(pieces) > 2 and "".join(pieces) == "Akwirw ier"
    assert gpt2.decode(ids) == "Akwirw ier"


# ---------------------------------------------------------------- GPTDataset and create_dataloader


@pytest.mark.parametrize("max_length, stride", [(4, 1), (4, 4), (2, 2), (8, 2), (256, 128), (5, 7)])
def test_dataset_window_count_matches_the_formula(verdict, verdict_ids, gpt2, max_length, stride):
    dataset = GPTDataset(verdict, gpt2, max_length, stride)
    assert len(dataset) == math.ceil((len(verdict_ids) - max_length) / stride)


@pytest.mark.parametrize("max_length, stride", [(4, 1), (6, 4), (4, 4), (3, 5)])
def test_dataset_windows_are_slices_of_the_token_ids(verdict, verdict_ids, gpt2, max_length, stride):
    dataset = GPTDataset(verdict, gpt2, max_length, stride)
    ids = torch.tensor(verdict_ids)
    for k in [0, 1, len(dataset) // 2, len(dataset) - 1]:
        inputs, targets = dataset[k]
        start = k * stride
        assert inputs.shape == targets.shape == (max_length,)
        assert torch.equal(inputs, ids[start:start + max_length])
        assert torch.equal(targets, ids[start + 1:start + max_length + 1])   # the input shifted by one
    # The last window ends within the text, and one more window would not fit.
    assert (len(dataset) - 1) * stride + max_length + 1 <= len(verdict_ids) < len(dataset) * stride + max_length + 1


def test_stride_controls_the_overlap_of_neighbouring_windows(verdict, gpt2):
    max_length = 6
    for stride in [1, 2, 3, 6]:
        dataset = GPTDataset(verdict, gpt2, max_length, stride)
        for k in range(5):
            (first, _), (second, _) = dataset[k], dataset[k + 1]
            assert torch.equal(first[stride:], second[:max_length - stride])
    tiled = GPTDataset(verdict, gpt2, max_length, max_length)
    (_, first_target), (second, _) = tiled[0], tiled[1]
    assert first_target[-1] == second[0]   # stride == max_length: no overlap and no gap


def test_dataset_keeps_end_of_text_as_a_token(gpt2):
    dataset = GPTDataset("one two <|endoftext|> three four", gpt2, max_length=3, stride=1)
    assert 50256 in torch.cat([inputs for inputs, _ in dataset]).tolist()


def test_dataset_rejects_text_shorter_than_a_window(gpt2):
    GPTDataset("one two three four five", gpt2, max_length=4, stride=1)   # 5 tokens: exactly one window
    with pytest.raises(ValueError, match=r"has 5 tokens.*max_length \+ 1 = 6"):
        GPTDataset("one two three four five", gpt2, max_length=5, stride=1)


@pytest.mark.parametrize("max_length, stride", [(0, 1), (4, 0), (4, -2)])
def test_dataset_rejects_non_positive_window_settings(gpt2, max_length, stride):
    with pytest.raises(ValueError, match="must be at least 1"):
        GPTDataset("a long enough text " * 10, gpt2, max_length=max_length, stride=stride)


def test_dataloader_batches_have_the_requested_shape(verdict, verdict_ids):
    loader = create_dataloader(verdict, batch_size=8, max_length=4, stride=4, shuffle=False)
    windows = math.ceil((len(verdict_ids) - 4) / 4)
    assert len(loader) == windows // 8   # drop_last
    batches = list(loader)
    assert all(inputs.shape == targets.shape == (8, 4) for inputs, targets in batches)
    assert batches[0][0].dtype == torch.long
    assert batches[0][0].flatten().tolist() == verdict_ids[:32]
    assert torch.equal(batches[0][1].flatten(), torch.tensor(verdict_ids[1:33]))


def test_dataloader_keeps_the_last_partial_batch_without_drop_last(verdict, verdict_ids):
    loader = create_dataloader(verdict, batch_size=8, max_length=4, stride=4, shuffle=False, drop_last=False)
    windows = math.ceil((len(verdict_ids) - 4) / 4)
    assert len(loader) == math.ceil(windows / 8)
    assert sum(len(inputs) for inputs, _ in loader) == windows


def test_shuffle_reorders_but_keeps_every_window(verdict):
    ordered = create_dataloader(verdict, batch_size=16, max_length=4, stride=4, shuffle=False, drop_last=False)
    torch.manual_seed(123)
    shuffled = create_dataloader(verdict, batch_size=16, max_length=4, stride=4, shuffle=True, drop_last=False)
    rows = [sorted(map(tuple, torch.cat([inputs for inputs, _ in loader]).tolist())) for loader in (ordered, shuffled)]
    assert rows[0] == rows[1]
    assert not torch.equal(next(iter(ordered))[0], next(iter(shuffled))[0])
