"""Chapter 2: from raw text to batches of token ids for next-token prediction.

The reusable code of the chapter: downloading the training text, two small word-level tokenizers that show
the idea, and a sliding-window dataset of input/target pairs over GPT-2 BPE tokens, served by a DataLoader.

Run ``python text_data.py`` to download *The Verdict* and print the first batch.
"""

import re

import tiktoken
import torch
from torch.utils.data import DataLoader, Dataset

from download import download

VERDICT_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
               "ch02/01_main-chapter-code/the-verdict.txt")
VERDICT_SHA256 = "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"


def load_verdict(path="the-verdict.txt"):
    """Return the text of Edith Wharton's *The Verdict* (1908), downloading it (or copying it from a mirror)."""
    return download(VERDICT_URL, path, sha256=VERDICT_SHA256).read_text(encoding="utf-8")


def split_words(text):
    """Split text into words and punctuation marks, dropping whitespace."""
    pieces = re.split(r'([,.:;?_!"()\']|--|\s)', text)
    return [piece for piece in pieces if piece.strip()]


def build_vocab(words, special_tokens=()):
    """Give every distinct word an id, in sorted order, then append the special tokens."""
    return {token: i for i, token in enumerate(sorted(set(words)) + list(special_tokens))}


class SimpleTokenizerV1:
    """Word-level tokenizer: knows only the words of its vocabulary."""

    def __init__(self, vocab):
        self.str_to_int = vocab
        self.int_to_str = {i: token for token, i in vocab.items()}

    def encode(self, text):
        unknown = [word for word in split_words(text) if word not in self.str_to_int]
        if unknown:
            raise KeyError(f"not in the vocabulary: {unknown[:5]}")
        return [self.str_to_int[word] for word in split_words(text)]

    def decode(self, ids):
        text = " ".join(self.int_to_str[i] for i in ids)
        return re.sub(r'\s+([,.:;?!"()\'])', r"\1", text)  # no space before punctuation


class SimpleTokenizerV2(SimpleTokenizerV1):
    """Word-level tokenizer that maps unknown words to <|unk|>; separate texts are joined by <|endoftext|>."""

    UNKNOWN = "<|unk|>"
    END_OF_TEXT = "<|endoftext|>"

    def encode(self, text):
        unk = self.str_to_int[self.UNKNOWN]
        return [self.str_to_int.get(word, unk) for word in split_words(text)]


class GPTDataset(Dataset):
    """Input/target windows of ``max_length`` tokens; the target is the input shifted one token ahead.

    Windows start every ``stride`` tokens: stride == max_length gives non-overlapping windows, a smaller stride
    gives overlapping ones.
    """

    def __init__(self, text, tokenizer, max_length, stride):
        if max_length < 1 or stride < 1:
            raise ValueError(f"max_length and stride must be at least 1, got max_length={max_length}, stride={stride}")
        token_ids = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
        if len(token_ids) <= max_length:
            raise ValueError(f"the text has {len(token_ids)} tokens; at least max_length + 1 = {max_length + 1} "
                             "are needed for one input/target pair")
        self.inputs, self.targets = [], []
        for start in range(0, len(token_ids) - max_length, stride):
            window = token_ids[start:start + max_length + 1]
            self.inputs.append(torch.tensor(window[:-1]))
            self.targets.append(torch.tensor(window[1:]))

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, index):
        return self.inputs[index], self.targets[index]


def create_dataloader(text, batch_size=4, max_length=256, stride=128, shuffle=True, drop_last=True,
                      num_workers=0):
    """Tokenize ``text`` with GPT-2's BPE and serve (inputs, targets) batches of shape (batch_size, max_length)."""
    tokenizer = tiktoken.get_encoding("gpt2")
    dataset = GPTDataset(text, tokenizer, max_length, stride)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers)


if __name__ == "__main__":
    torch.manual_seed(123)
    verdict = load_verdict()
    loader = create_dataloader(verdict, batch_size=8, max_length=4, stride=4, shuffle=False)
    inputs, targets = next(iter(loader))
    print(f"{len(verdict):,} characters, {len(loader.dataset):,} windows of 4 tokens")
    print("inputs:\n", inputs, "\ntargets:\n", targets)
