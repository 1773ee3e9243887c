"""Byte-level byte-pair encoding (BPE) from scratch: train a tokenizer, or load GPT-2's and match tiktoken.

Read it top to bottom: (1) how text is cut into pre-tokens, (2) how merges are learned from a text, (3) how a
vocabulary of merged byte strings encodes and decodes text, (4) how GPT-2's published files become such a
vocabulary, (5) the sample texts used to try it out. Plain Python: the standard library's ``re`` and
``unicodedata`` plus the course's download helper.
"""

import itertools
import json
import re
import sys
import unicodedata
from collections import Counter
from math import inf
from pathlib import Path

from download import TIKTOKEN_GPT2_FILES, download

# 1. Pre-tokenization ---------------------------------------------------------------------------------------------

def char_class(predicate):
    """The inside of a regex class ``[...]`` matching exactly the characters for which ``predicate`` is true.

    GPT-2's split pattern uses ``\\p{L}`` (any letter) and ``\\p{N}`` (any number), which Python's ``re`` does
    not know. Listing every run of matching code points as a range gives the same set of characters.
    """
    ranges = []
    for inside, run in itertools.groupby(range(sys.maxunicode + 1), key=lambda code: predicate(chr(code))):
        if inside:
            run = list(run)
            ranges.append(f"\\U{run[0]:08x}-\\U{run[-1]:08x}")
    return "".join(ranges)


# \p{L}: general category L* (Lu, Ll, Lt, Lm, Lo), which is exactly what str.isalpha() tests.
LETTERS = char_class(str.isalpha)
# \p{N}: general category N* (Nd decimal digits, Nl letter numbers such as Ⅻ, No other numbers such as ½ or ²).
NUMBERS = char_class(lambda char: unicodedata.category(char).startswith("N"))
# \s in tiktoken's regex engine: the Unicode White_Space property. Python's own \s would also match the
# separators U+001C..U+001F, which are not White_Space, so the 25 characters are listed here.
WHITESPACE = r"\t\n\x0b\x0c\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

GPT2_SPLIT_PATTERN = re.compile(
    r"'(?:[sdmt]|ll|ve|re)"  # an English contraction: 's 'd 'm 't 'll 've 're (lower case only)
    rf"| ?[{LETTERS}]+"  # a run of letters, with at most one space in front
    rf"| ?[{NUMBERS}]+"  # a run of digits and other numbers, with at most one space in front
    rf"| ?[^{WHITESPACE}{LETTERS}{NUMBERS}]+"  # a run of anything else (punctuation, symbols, emoji, marks)
    rf"|[{WHITESPACE}]+(?![^{WHITESPACE}])"  # whitespace, leaving its last character to the word that follows
    rf"|[{WHITESPACE}]+"  # whatever whitespace is left
)


def pretokenize(text):
    """Cut ``text`` into the pieces GPT-2 encodes one by one; joined together they give ``text`` back."""
    return GPT2_SPLIT_PATTERN.findall(text)


# 2. Training -----------------------------------------------------------------------------------------------------

def count_pairs(words):
    """How often each adjacent pair of ids occurs; ``words`` maps a tuple of ids to how often it occurs."""
    counts = Counter()
    for word, frequency in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += frequency
    return counts


def merge_pair(word, pair, new_id):
    """Replace each occurrence of ``pair`` in the tuple ``word`` by ``new_id``, scanning left to right."""
    merged, i = [], 0
    while i < len(word):
        if word[i:i + 2] == pair:
            merged.append(new_id)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return tuple(merged)


def train_bpe(text, vocab_size, verbose=False):
    """Learn a byte-level BPE vocabulary of ``vocab_size`` tokens from ``text``; return it as {id: bytes}.

    Ids 0..255 are the 256 single bytes. Each further id is a merge of the adjacent pair of ids that occurs most
    often in the text (ties go to the smallest pair), counted inside pre-tokens, so no token spans two words.
    With ``verbose``, each merge is printed as it is learned.
    """
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (one token per byte value), got {vocab_size}")
    vocab = {byte: bytes([byte]) for byte in range(256)}
    words = Counter(tuple(piece.encode("utf-8")) for piece in pretokenize(text))
    for new_id in range(256, vocab_size):
        counts = count_pairs(words)
        if not counts:
            raise ValueError(f"the text is too short: after {new_id - 256} merges no adjacent pair is left to merge "
                             f"(asked for vocab_size={vocab_size})")
        pair = min(counts, key=lambda candidate: (-counts[candidate], candidate))
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        merged_words = Counter()
        for word, frequency in words.items():
            merged_words[merge_pair(word, pair, new_id)] += frequency
        words = merged_words
        if verbose:
            left, right, token = (vocab[i].decode("utf-8", "backslashreplace") for i in (*pair, new_id))
            print(f"merge {new_id - 255:4d}: {left!r:>12} + {right!r:<12} -> {token!r:<16} ({counts[pair]} times)")
    return vocab


# 3. Encoding and decoding ----------------------------------------------------------------------------------------

class BPETokenizer:
    """Encode text to token ids and back with a byte-level BPE vocabulary, exactly the way tiktoken does.

    ``vocab`` maps each id to the bytes of its token and must contain all 256 single bytes. An id doubles as the
    token's *rank*: lower ids were learned earlier, and encoding always performs the earliest-learned merge
    first. ``special_tokens`` maps strings such as "<|endoftext|>" to ids of their own; merging never produces
    them, they are only encoded when explicitly allowed.
    """

    def __init__(self, vocab, special_tokens=None):
        self.ranks = {}
        for token_id, token in vocab.items():
            if token in self.ranks:
                raise ValueError(f"ids {self.ranks[token]} and {token_id} are the same token {token!r}")
            self.ranks[token] = token_id
        missing = [byte for byte in range(256) if bytes([byte]) not in self.ranks]
        if missing:
            raise ValueError(f"the vocabulary lacks {len(missing)} single bytes (e.g. {missing[0]}); "
                             "a byte-level vocabulary needs all 256 to encode any text")
        self.special_tokens = dict(special_tokens or {})
        self.id_to_bytes = {**vocab, **{i: text.encode("utf-8") for text, i in self.special_tokens.items()}}
        if len(self.id_to_bytes) != len(vocab) + len(self.special_tokens):
            raise ValueError(f"special tokens {self.special_tokens} reuse ids of the vocabulary or of each other")
        self.n_vocab = max(self.id_to_bytes) + 1
        self.cache = {}

    def encode(self, text, allowed_special=frozenset(), disallowed_special="all"):
        """Token ids of ``text``, with tiktoken's rules for special tokens.

        A special token in the text becomes its id only if it is in ``allowed_special`` (a set, or "all").
        By default every other special token is *disallowed*: finding one in the text raises ValueError, so text
        from users cannot smuggle in an "<|endoftext|>". With ``disallowed_special=()`` it is encoded as text.
        """
        if allowed_special == "all":
            allowed_special = set(self.special_tokens)
        unknown = set(allowed_special) - set(self.special_tokens)
        if unknown:
            raise ValueError(f"allowed_special names {sorted(unknown)}, which are not special tokens of this "
                             f"tokenizer; it has {sorted(self.special_tokens)}")
        if disallowed_special == "all":
            disallowed_special = set(self.special_tokens) - set(allowed_special)
        found = [token for token in disallowed_special if token in text]
        if found:
            raise ValueError(f"the text contains the special token {found[0]!r}. Pass allowed_special={{{found[0]!r}}} "
                             f"to encode it as a special token, or disallowed_special=() to encode it as plain text")
        if not allowed_special:
            return self.encode_ordinary(text)
        # Split at the allowed special tokens (longest first); the capture group keeps them at the odd positions.
        specials = "|".join(re.escape(token) for token in sorted(allowed_special, key=len, reverse=True))
        ids = []
        for position, part in enumerate(re.split(f"({specials})", text)):
            if position % 2:
                ids.append(self.special_tokens[part])
            else:
                ids.extend(self.encode_ordinary(part))
        return ids

    def encode_ordinary(self, text):
        """Token ids of ``text`` as plain text: special-token strings get no special treatment."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # Unpaired surrogates have no UTF-8 form. Like tiktoken, join pairs and replace the rest by U+FFFD.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        ids = []
        for piece in pretokenize(text):
            if piece not in self.cache:
                self.cache[piece] = self.merge_bytes(piece.encode("utf-8"))
            ids.extend(self.cache[piece])
        return ids

    def merge_bytes(self, data):
        """BPE on one pre-token: start from single bytes, merge the pair that forms the lowest-ranked token.

        A pre-token that is a token as a whole stays whole, as in tiktoken. The loop merges one pair at a time
        (the leftmost one when the same best pair occurs twice) until no adjacent pair forms a token.
        """
        if data in self.ranks:
            return (self.ranks[data],)
        parts = [data[i:i + 1] for i in range(len(data))]
        while len(parts) > 1:
            pair_ranks = [self.ranks.get(left + right, inf) for left, right in zip(parts, parts[1:])]
            best = min(pair_ranks)
            if best == inf:
                break
            i = pair_ranks.index(best)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return tuple(self.ranks[part] for part in parts)

    def decode_bytes(self, ids):
        """The bytes the token ids stand for."""
        unknown = [i for i in ids if i not in self.id_to_bytes]
        if unknown:
            raise ValueError(f"unknown token id {unknown[0]!r}: this tokenizer's ids are 0..{self.n_vocab - 1}")
        return b"".join(self.id_to_bytes[i] for i in ids)

    def decode(self, ids):
        """The text the token ids stand for; bytes that are not valid UTF-8 become U+FFFD, as in tiktoken."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


# 4. GPT-2's vocabulary -------------------------------------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2's table from each byte value to the character that stands for it in encoder.json and vocab.bpe.

    The 188 bytes that are visible Latin-1 characters stand for themselves. The other 68 (control codes, the
    space, the no-break space, the soft hyphen) are given the characters from U+0100 on, in byte order, so every
    token can be written as visible text. For example the space is "Ġ" and the newline "Ċ".
    """
    visible = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    table, next_char = {}, 256
    for byte in range(256):
        if byte in visible:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(next_char)
            next_char += 1
    return table


def read_gpt2_files(encoder_json, vocab_bpe):
    """GPT-2's vocabulary {id: bytes} and special tokens {text: id} from its two files, checked against each other.

    vocab.bpe alone defines the tokens: the 256 bytes (in the order of the characters standing for them) and then
    the result of each merge, one per line. encoder.json gives each token its id, which must be its position in
    that order (its rank); its entries beyond the merged tokens are the special tokens.
    """
    char_of = bytes_to_unicode()
    byte_of = {char: byte for byte, char in char_of.items()}
    lines = Path(vocab_bpe).read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].startswith("#version"):
        raise ValueError(f"{vocab_bpe}: expected a first line '#version: ...', got {lines[:1]}")
    vocab = [bytes([byte]) for byte in sorted(char_of, key=char_of.get)]
    known = set(vocab)
    for line_number, line in enumerate(lines[1:], start=2):
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts) or not all(char in byte_of for char in line.replace(" ", "")):
            raise ValueError(f"{vocab_bpe}, line {line_number}: expected two tokens written in GPT-2's byte "
                             f"characters and separated by one space, got {line!r}")
        left, right = (bytes(byte_of[char] for char in part) for part in parts)
        if left not in known or right not in known or left + right in known:
            raise ValueError(f"{vocab_bpe}, line {line_number}: the merge {line!r} must join two earlier tokens "
                             "into a new one")
        vocab.append(left + right)
        known.add(left + right)
    encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
    for rank, token in enumerate(vocab):
        text = "".join(char_of[byte] for byte in token)
        if encoder.get(text) != rank:
            raise ValueError(f"{encoder_json}: token {text!r} has id {encoder.get(text)}, but {vocab_bpe} makes it "
                             f"token number {rank}")
    special_tokens = {text: i for text, i in encoder.items() if i >= len(vocab)}
    if len(vocab) + len(special_tokens) != len(encoder):
        raise ValueError(f"{encoder_json}: has {len(encoder)} entries, but {len(vocab)} tokens from {vocab_bpe} plus "
                         f"{len(special_tokens)} special tokens with ids beyond them account for fewer")
    return dict(enumerate(vocab)), special_tokens


def load_gpt2_tokenizer(folder="data"):
    """GPT-2's tokenizer, from encoder.json and vocab.bpe downloaded (sha256-checked) into ``folder`` if needed."""
    paths = {url.rsplit("/", 1)[1]: download(url, Path(folder) / url.rsplit("/", 1)[1], sha256=sha256)
             for url, sha256 in TIKTOKEN_GPT2_FILES.items()}
    return BPETokenizer(*read_gpt2_files(paths["encoder.json"], paths["vocab.bpe"]))


# 5. Sample texts -------------------------------------------------------------------------------------------------

SAMPLE_TEXTS = {
    "the-verdict.txt": (
        "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
        "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
    ),
    "instruction-data.json": (
        "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
        "ch07/01_main-chapter-code/instruction-data.json",
        "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
    ),
}


def sample_text(name, folder="data"):
    """The text of one of the SAMPLE_TEXTS, downloaded (sha256-checked) into ``folder`` if needed."""
    if name not in SAMPLE_TEXTS:
        raise ValueError(f"unknown sample text {name!r}; choose one of {sorted(SAMPLE_TEXTS)}")
    url, sha256 = SAMPLE_TEXTS[name]
    return download(url, Path(folder) / name, sha256=sha256).read_bytes().decode("utf-8")
