"""Automatic feedback for the chapter 2 exercises (exercises.ipynb).

Each check works out the expected result itself, from The Verdict and GPT-2's tokenizer, prints a short success
message when the answer is right and raises AssertionError with a hint (not the answer) when it is wrong or
still ``None``.
"""

from functools import lru_cache

import tiktoken
import torch

from text_data import GPTDataset, SimpleTokenizerV2, build_vocab, load_verdict, split_words

UNKNOWN_TEXT = "Akwirw ier"
V2_TEXT = "Edith Wharton wrote The Verdict in 1908; Jack Gisburn is its painter."
GPT2_SMALL = {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768}


@lru_cache(maxsize=None)
def _bpe():
    return tiktoken.get_encoding("gpt2")


@lru_cache(maxsize=None)
def _verdict():
    return load_verdict()


@lru_cache(maxsize=None)
def _verdict_ids():
    return tuple(_bpe().encode(_verdict()))


def _answered(**answers):
    for name, value in answers.items():
        assert value is not None, f"`{name}` is still None: assign your answer to it in the cell above."


def _first_windows(batch_size, max_length, stride):
    """The first batch of inputs and targets, sliced straight from the token ids."""
    ids = torch.tensor(_verdict_ids())
    starts = [k * stride for k in range(batch_size)]
    inputs = torch.stack([ids[s:s + max_length] for s in starts])
    targets = torch.stack([ids[s + 1:s + max_length + 1] for s in starts])
    return inputs, targets


def check_exercise_2_1(ids, pieces, decoded):
    _answered(ids=ids, pieces=pieces, decoded=decoded)
    expected = _bpe().encode(UNKNOWN_TEXT)
    assert list(ids) == expected, \
        f"`ids` should be the GPT-2 token ids of {UNKNOWN_TEXT!r}, as returned by the tokenizer's encode()."
    assert isinstance(pieces, (list, tuple)) and all(isinstance(p, str) for p in pieces), \
        "`pieces` should be a list of strings, one per token id."
    assert len(pieces) == len(expected), "`pieces` needs exactly one string per token id."
    assert list(pieces) == [_bpe().decode([i]) for i in expected], \
        "Decode each id on its own: pass a one-element list to decode()."
    assert decoded == UNKNOWN_TEXT, "`decoded` should be the result of decoding all ids at once."
    print(f"Correct: {UNKNOWN_TEXT!r} is {len(expected)} known pieces, and decoding restores it exactly.")


def check_exercise_2_2(batch_2_2, batch_8_2, overlap_8_2):
    _answered(batch_2_2=batch_2_2, batch_8_2=batch_8_2, overlap_8_2=overlap_8_2)
    for name, batch, max_length in [("batch_2_2", batch_2_2, 2), ("batch_8_2", batch_8_2, 8)]:
        assert len(batch) == 2, f"`{name}` should be the pair (inputs, targets) that the loader yields first."
        inputs, targets = batch
        assert tuple(inputs.shape) == tuple(targets.shape) == (4, max_length), \
            f"`{name}`: inputs and targets should both have shape (batch_size, max_length) = (4, {max_length})."
        expected_inputs, expected_targets = _first_windows(4, max_length, 2)
        assert torch.equal(inputs, expected_inputs), \
            f"`{name}`: the inputs are not the first windows of the story. Did you use stride=2 and shuffle=False?"
        assert torch.equal(targets, expected_targets), f"`{name}`: each target row is its input moved one token ahead."
    assert overlap_8_2 == 8 - 2, "`overlap_8_2`: how far does the window move, and how many tokens does it keep?"
    print("Correct: with stride 2, windows of 2 tokens tile the text and windows of 8 tokens overlap by 6.")


def check_exercise_2_3(vocab_size_v2, encoded, unknown_words):
    _answered(vocab_size_v2=vocab_size_v2, encoded=encoded, unknown_words=unknown_words)
    words = split_words(_verdict())
    assert vocab_size_v2 != len(set(words)), "The vocabulary of the V2 tokenizer also holds the special tokens."
    vocab = build_vocab(words, special_tokens=[SimpleTokenizerV2.END_OF_TEXT, SimpleTokenizerV2.UNKNOWN])
    assert vocab_size_v2 == len(vocab), "Count every distinct word of the story, then add the special tokens."
    expected = SimpleTokenizerV2(vocab).encode(V2_TEXT)
    assert len(encoded) == len(expected), "`encoded` needs one id per word or punctuation mark of the sentence."
    assert list(encoded) == expected, \
        "`encoded` differs: append <|endoftext|> first and <|unk|> second, so <|unk|> gets the last id."
    unknown = [w for w in split_words(V2_TEXT) if w not in vocab]
    assert list(unknown_words) == unknown, \
        "`unknown_words` should list, in order, the words of the sentence that were encoded as <|unk|>."
    print(f"Correct: {len(unknown)} of the sentence's {len(expected)} tokens are unknown to the story's vocabulary.")


def check_exercise_2_4(count_windows, num_windows_verdict):
    _answered(count_windows=count_windows, num_windows_verdict=num_windows_verdict)
    assert callable(count_windows), "`count_windows` should be a function (num_tokens, max_length, stride) -> int."
    n = len(_verdict_ids())
    for max_length, stride in [(4, 4), (4, 1), (2, 2), (8, 2), (256, 128), (5, 7), (1024, 1024)]:
        expected = len(GPTDataset(_verdict(), _bpe(), max_length, stride))
        got = int(count_windows(n, max_length, stride))  # a plain int: the answer's own == decides nothing
        assert got == expected, (f"count_windows({n}, {max_length}, {stride}) returned {got}, but the dataset has a "
                                 "different number of windows. Remember the one extra token each target needs.")
    text = "one two three four five six"   # 6 tokens
    for max_length, stride in [(5, 1), (4, 1), (4, 2), (3, 3)]:
        expected = len(GPTDataset(text, _bpe(), max_length, stride))
        assert int(count_windows(6, max_length, stride)) == expected, \
            f"Check a short text by hand: 6 tokens, max_length={max_length}, stride={stride}."
    assert int(num_windows_verdict) == len(GPTDataset(_verdict(), _bpe(), 256, 128)), \
        "`num_windows_verdict` should be your function's answer for The Verdict with max_length=256, stride=128."
    print(f"Correct: The Verdict gives {num_windows_verdict} windows of 256 tokens with stride 128.")


def check_exercise_2_5(token_embedding_layer, pos_embedding_layer, input_embeddings, num_params):
    _answered(token_embedding_layer=token_embedding_layer, pos_embedding_layer=pos_embedding_layer,
              input_embeddings=input_embeddings, num_params=num_params)
    vocab_size, context_length, emb_dim = GPT2_SMALL.values()
    assert isinstance(token_embedding_layer, torch.nn.Embedding) and isinstance(pos_embedding_layer,
                                                                                torch.nn.Embedding), \
        "Both layers should be torch.nn.Embedding."
    assert tuple(token_embedding_layer.weight.shape) == (vocab_size, emb_dim), \
        "The token embedding needs one row per GPT-2 token id, each as long as GPT-2 small's embedding size."
    assert tuple(pos_embedding_layer.weight.shape) == (context_length, emb_dim), \
        "The position embedding needs one row per position of the context."
    assert tuple(input_embeddings.shape) == (2, context_length, emb_dim), \
        "`input_embeddings` should have shape (batch, tokens, emb_dim)."
    inputs, _ = _first_windows(2, context_length, context_length)
    expected = token_embedding_layer(inputs) + pos_embedding_layer(torch.arange(context_length))
    assert torch.allclose(input_embeddings, expected), \
        "`input_embeddings` should be token embeddings of the first batch plus the position embeddings."
    assert num_params == (vocab_size + context_length) * emb_dim, \
        "`num_params` counts every trainable number in both weight matrices."
    print(f"Correct: (2, {context_length}, {emb_dim}) input embeddings from {num_params:,} embedding parameters.")
