"""The from-scratch BPE tokenizer: training, and token-for-token agreement with tiktoken's GPT-2 encoding.

tiktoken is the reference. Offline, it finds GPT-2's files through TIKTOKEN_CACHE_DIR
(``python download.py --seed-tiktoken-cache DIR`` fills such a folder from the mirror).
"""

import json
import random
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str

from bpe import (
    LETTERS,
    NUMBERS,
    WHITESPACE,
    BPETokenizer,
    load_gpt2_tokenizer,
    pretokenize,
    read_gpt2_files,
    sample_text,
    train_bpe,
)

DATA = Path(__file__).resolve().parents[1] / "data"

# Every character Python's Unicode database knows (unassigned code points and surrogate halves left out; the
# 137,468 private-use characters are represented by a sample). Characters assigned in a newer Unicode version
# than Python's are classified by tiktoken's own tables and are not covered, see README.md.
ASSIGNED = [chr(code) for code in range(sys.maxunicode + 1)
            if (category := unicodedata.category(chr(code))) not in ("Cn", "Cs", "Co")
            or category == "Co" and code % 1009 == 0]
# Each character in contexts that show whether it joins letters, numbers, punctuation and a leading space.
ALL_CHARACTERS_TEXT = "".join(f"a{char}1{char}!{char} {char}\n" for char in ASSIGNED)

# Building blocks for generated text that stresses every branch of the pre-tokenization pattern.
FRAGMENTS = {
    "letters": ["abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "éèêëàâäôöûüçñßÉÀÇØåæœıŁł",
                "αβγδεζηθικλμνξοπρστυφχψωΣΩ", "абвгдежзийклмнопрстуфхцчшщъыьэюяЖЩЯ", "مرحباالعربية", "שלוםעברית",
                "नमस्तेहिन्दी", "สวัสดีภาษาไทย", "漢字中文日本語", "ひらがなカタカナー", "한국어조선말", "ሰላምአማርኛ",
                "𝐀𝐁𝒜𝔸ǅʰˠ"],
    "numbers": ["0123456789", "٠١٢٣٤٥٦٧٨٩", "०१२३४५", "０１２３", "²³¹½¼⅓", "ⅠⅡⅢⅫ", "①②③", "𝟎𝟏𝟐", "〇"],
    "punctuation": ["!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~", "«»„“”‘’—–…•·¡¿§¶", "€£¥₹©®™°±×÷√∑∞≠≤≥←→⇒♠♥✓",
                    "\u0301\u0308\u0327\u036b\u0e31\u093f"],
    "whitespace": [" ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\xa0", "\u2002", "\u2009", "\u3000", "\u2028",
                   "\u2029", "\x85", "\u1680", "\u202f", "\u205f"],
    # Not whitespace to tiktoken: the separators U+001C..U+001F (though Python's str.isspace() accepts them),
    # zero-width characters, control codes.
    "look-alikes": ["\x1c", "\x1d", "\x1e", "\x1f", "\u200b", "\u200c", "\u200d", "\ufeff", "\u180e", "\x00",
                    "\x1b[31m", "\ufffd", "\ue000"],
    "contractions": ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'D",
                     "’s", "don't", "I'M", "they'RE", "it's", "''", "'x"],
    "emoji": ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇩🇪🇫🇷", "❤️", "1️⃣", "🧑🏿‍💻", "👩‍❤️‍💋‍👨"],
    "code": ["def f(x):\n    return x**2  # square\n", "if (a && b) { c++; }\n", "x = [1, 2, 3]\t# list",
             "    \tindented\n\n\n", "<div class=\"x\">&nbsp;</div>", "print(f'{n:>4}')", "a==b!=c",
             "SELECT * FROM t;"],
    "combining": ["e\u0301", "n\u0303", "a\u0308\u0304", "Z\u0351\u0327\u036b", "\u0301", "ก\u0e31", "क\u094d\u0937"],
}


def generated_texts(count, seed):
    """Random texts made of fragments of every kind, glued with nothing, spaces or whitespace runs."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 60)):
            kind = rng.choice(list(FRAGMENTS))
            if kind in ("whitespace", "look-alikes"):  # a run mixing characters of the kind
                fragment = "".join(rng.choice(FRAGMENTS[kind]) for _ in range(rng.randint(1, 6)))
            else:
                fragment = rng.choice(FRAGMENTS[kind])
                if kind in ("letters", "numbers", "punctuation"):  # a run of characters of one group
                    fragment = "".join(rng.choice(fragment) for _ in range(rng.randint(1, 6)))
            parts.append(fragment)
            parts.append(rng.choice(["", "", " ", "  ", "\n", " \n ", "\t "]))
        texts.append("".join(parts))
    return texts


GENERATED = generated_texts(3000, seed=123)

EDGE_CASES = [
    "", " ", "  ", "\n", "\n\n", " \n ", "hello ", "hello  ", "hello\n\n", "a  b", "a \n b", "a\t\tb", "  a",
    "'s", "''s", " 's", "x's", "I'M", "don'T", "'ll'll", "'", "1,000,000.5", "12345678901", " 3.14", "x\x1cy",
    "\x1c ", " \x1c", "hello\x1f\x1fworld", "\u3000\u3000x", "\xa0x", "e\u0301\u0301", " \u0301", "café", "🙂 🙂",
    "👨‍👩‍👧‍👦👨‍👩‍👧‍👦", "\r\n\r\n", "end.\n", "tab\t", "<|endoftext", "a" * 300, " " * 300 + "x",
]


@pytest.fixture(scope="module")
def gpt2():
    return load_gpt2_tokenizer(DATA)


@pytest.fixture(scope="module")
def reference():
    return tiktoken.get_encoding("gpt2")


@pytest.fixture(scope="module")
def corpus():
    """Real text: The Verdict, the instruction data file as it is, and its entries as plain text."""
    raw_instructions = sample_text("instruction-data.json", DATA)
    entries = "\n\n".join("\n".join(entry.values()) for entry in json.loads(raw_instructions))
    return {"the-verdict": sample_text("the-verdict.txt", DATA), "instruction-data.json": raw_instructions,
            "instruction-entries": entries}


# Pre-tokenization ------------------------------------------------------------------------------------------------

def test_character_classes_follow_unicode_categories():
    everything = "".join(chr(code) for code in range(sys.maxunicode + 1))
    letters = "".join(char for char in everything if unicodedata.category(char) in ("Lu", "Ll", "Lt", "Lm", "Lo"))
    numbers = "".join(char for char in everything if unicodedata.category(char) in ("Nd", "Nl", "No"))
    white_space = [char for char in everything if char.isspace() and char not in "\x1c\x1d\x1e\x1f"]
    assert "".join(re.findall(f"[{LETTERS}]", everything)) == letters
    assert "".join(re.findall(f"[{NUMBERS}]", everything)) == numbers
    assert re.findall(f"[{WHITESPACE}]", everything) == white_space
    assert len(white_space) == 25


def test_pretokens_are_those_of_tiktokens_own_pattern():
    """tiktoken's pattern string, run by the ``regex`` package (which has \\p{L}), cuts text into the same pieces."""
    regex = pytest.importorskip("regex")
    pattern = regex.compile(r50k_pat_str)
    for text in [ALL_CHARACTERS_TEXT, *GENERATED, *EDGE_CASES]:
        assert pretokenize(text) == pattern.findall(text), f"different pieces for {text[:80]!r}"


def test_pretokens_join_to_the_text():
    for text in GENERATED + EDGE_CASES:
        assert "".join(pretokenize(text)) == text


# GPT-2 compatibility ---------------------------------------------------------------------------------------------

def test_gpt2_vocabulary_is_tiktokens(gpt2, reference):
    assert gpt2.n_vocab == reference.n_vocab == 50257
    assert gpt2.special_tokens == {"<|endoftext|>": 50256}
    for token_id in range(reference.n_vocab):
        assert gpt2.decode_bytes([token_id]) == reference.decode_single_token_bytes(token_id), token_id


@pytest.mark.parametrize("name", ["the-verdict", "instruction-data.json", "instruction-entries"])
def test_real_text_encodes_like_tiktoken(gpt2, reference, corpus, name):
    text = corpus[name]
    ids = gpt2.encode(text)
    assert ids == reference.encode(text)
    assert gpt2.decode(ids) == text
    if name == "the-verdict":
        assert (len(text), len(ids)) == (20479, 5145)  # the figures published in the data README


def test_every_character_encodes_like_tiktoken(gpt2, reference):
    assert gpt2.encode(ALL_CHARACTERS_TEXT) == reference.encode(ALL_CHARACTERS_TEXT)


def test_generated_text_encodes_like_tiktoken(gpt2, reference):
    for text in GENERATED:
        ids = gpt2.encode(text)
        assert ids == reference.encode(text), f"different ids for {text!r}"
        assert gpt2.decode(ids) == text


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_encode_like_tiktoken(gpt2, reference, text):
    ids = gpt2.encode(text)
    assert ids == reference.encode(text)
    assert gpt2.decode(ids) == text


def test_vocabulary_tokens_as_text_encode_like_tiktoken(gpt2, reference):
    """Each token that is valid UTF-8, encoded on its own (GPT-2's vocabulary is full of odd strings)."""
    for token_id in range(reference.n_vocab - 1):
        text = reference.decode_single_token_bytes(token_id).decode("utf-8", errors="ignore")
        assert gpt2.encode(text) == reference.encode(text), (token_id, text)


def test_surrogates_are_repaired_like_tiktoken(gpt2, reference):
    text = "pair: \ud83d\ude00, lone: \ud800x"
    assert gpt2.encode(text) == reference.encode(text)


@pytest.mark.parametrize("text", ["<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ",
                                  "<|endoftext|><|endoftext|>", "<|endoftext|",
                                  "Hello, do you like tea? <|endoftext|> In the sunlit terraces"])
@pytest.mark.parametrize("options", [{"allowed_special": "all"}, {"allowed_special": {"<|endoftext|>"}},
                                     {"disallowed_special": ()}, {}], ids=["all", "set", "as-text", "default"])
def test_special_tokens_like_tiktoken(gpt2, reference, text, options):
    try:
        expected = reference.encode(text, **options)
    except ValueError:
        with pytest.raises(ValueError, match=re.escape("special token '<|endoftext|>'")):
            gpt2.encode(text, **options)
    else:
        assert gpt2.encode(text, **options) == expected
        assert gpt2.decode(expected) == text


def test_the_longest_special_token_wins():
    tokenizer = BPETokenizer({i: bytes([i]) for i in range(256)}, {"<|x|>": 256, "<|x|>y": 257})
    assert tokenizer.encode("<|x|>y<|x|>", allowed_special="all") == [257, 256]


def test_encode_ordinary_ignores_special_tokens(gpt2, reference):
    text = "a <|endoftext|> b"
    expected = reference.encode(text, disallowed_special=())
    assert gpt2.encode_ordinary(text) == reference.encode_ordinary(text) == expected


def test_bad_input_gets_a_clear_error(gpt2):
    with pytest.raises(ValueError, match="unknown token id 50257"):
        gpt2.decode([15496, 50257])
    with pytest.raises(ValueError, match="not special tokens"):
        gpt2.encode("x", allowed_special={"<|endoftext|"})
    with pytest.raises(ValueError, match="lacks 1 single bytes"):
        BPETokenizer({i: bytes([i]) for i in range(255)})
    with pytest.raises(ValueError, match="ids 256 and 257 are the same token"):
        BPETokenizer({**{i: bytes([i]) for i in range(256)}, 256: b"ab", 257: b"ab"})
    with pytest.raises(ValueError, match="unknown sample text 'verdict.txt'"):
        sample_text("verdict.txt", DATA)


@pytest.mark.parametrize("line, message", [("Ġ t extra", "line 3: expected two tokens"),
                                           ("Ġt\x01 h", "line 3: expected two tokens"),
                                           ("Ġthe re", "line 3: the merge 'Ġthe re' must join two earlier")])
def test_broken_vocab_bpe_is_reported_with_its_line(tmp_path, line, message):
    vocab_bpe = tmp_path / "vocab.bpe"
    vocab_bpe.write_text(f"#version: 0.2\nĠ t\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_gpt2_files(tmp_path / "unused.json", vocab_bpe)


def test_encoder_json_that_disagrees_with_vocab_bpe_is_reported(tmp_path):
    paths = {name: DATA / name for name in ("encoder.json", "vocab.bpe")}
    encoder = json.loads(paths["encoder.json"].read_text(encoding="utf-8"))
    encoder["Ġt"], encoder["Ġa"] = encoder["Ġa"], encoder["Ġt"]
    (tmp_path / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    with pytest.raises(ValueError, match="token 'Ġt' has id 257, but .* makes it token number 256"):
        read_gpt2_files(tmp_path / "encoder.json", paths["vocab.bpe"])


# Training --------------------------------------------------------------------------------------------------------

def test_training_on_a_hand_checked_example(capsys):
    # "aaabdaaabac": "aa" occurs 4 times (overlaps count); then "aa"+"a" and "a"+"b" occur twice each and the
    # tie goes to the smaller pair of ids (97, 98); then "aa"+"ab" occurs twice.
    vocab = train_bpe("aaabdaaabac", 259, verbose=True)
    assert [vocab[i] for i in range(256, 259)] == [b"aa", b"ab", b"aaab"]
    assert "'a' + 'a'" in capsys.readouterr().out
    # After those 3 merges the text is [aaab, d, aaab, a, c]: 4 more merges make it one token, then nothing is left.
    with pytest.raises(ValueError, match="too short: after 7 merges"):
        train_bpe("aaabdaaabac", 300)
    with pytest.raises(ValueError, match="at least 256"):
        train_bpe("text", 100)


def test_each_merge_is_the_most_frequent_pair(corpus):
    """Recount independently: encode the pre-tokens with the merges learned so far, count adjacent pairs."""
    text = corpus["the-verdict"]
    vocab = train_bpe(text, 256 + 40)
    pieces = Counter(piece.encode("utf-8") for piece in pretokenize(text))
    for new_id in range(256, len(vocab)):
        tokenizer = BPETokenizer({i: vocab[i] for i in range(new_id)})
        counts = Counter()
        for piece, frequency in pieces.items():
            ids = tokenizer.merge_bytes(piece)
            for pair in zip(ids, ids[1:]):
                counts[pair] += frequency
        most = max(counts.values())
        expected = min(pair for pair, count in counts.items() if count == most)
        assert vocab[new_id] == vocab[expected[0]] + vocab[expected[1]], f"merge {new_id - 255}"


def test_merges_stay_inside_pretokens():
    text = "the cat sat on the mat; the rat sat on the hat. " * 30
    vocab = train_bpe(text, 256 + 16)  # all the merges there are: then every pre-token is a single token
    learned = [vocab[i].decode("utf-8") for i in range(256, len(vocab))]
    assert all(pretokenize(token) == [token] for token in learned), learned
    assert len(BPETokenizer(vocab).encode(text)) == len(pretokenize(text))


def tiktoken_encoding(vocab):
    """tiktoken with GPT-2's split pattern and the given vocabulary (ranks = ids), as an independent encoder."""
    return tiktoken.Encoding("from-scratch", pat_str=r50k_pat_str,
                             mergeable_ranks={token: i for i, token in vocab.items()}, special_tokens={})


def test_trained_tokenizer_compresses_and_encodes_like_tiktoken(corpus):
    text = corpus["the-verdict"]
    vocab = train_bpe(text, 500)
    tokenizer, reference = BPETokenizer(vocab), tiktoken_encoding(vocab)
    ids = tokenizer.encode(text)
    assert len(ids) < 0.5 * len(text.encode("utf-8"))
    for text in [*corpus.values(), *GENERATED[:300]]:
        ids = tokenizer.encode(text)
        assert ids == reference.encode(text)
        assert tokenizer.decode(ids) == text


def test_a_pretoken_that_is_a_token_stays_whole():
    """Merging a, b, c, d gives a + bc + d (no further pair is a token), yet "abcd" is a token: tiktoken uses it."""
    vocab = {**{i: bytes([i]) for i in range(256)}, 256: b"bc", 257: b"ab", 258: b"abcd"}
    tokenizer, reference = BPETokenizer(vocab), tiktoken_encoding(vocab)
    assert tokenizer.encode("abcd") == reference.encode("abcd") == [258]
    assert tokenizer.encode("abcde") == reference.encode("abcde") == [ord("a"), 256, ord("d"), ord("e")]
