"""Reference-based scores for instruction responses: ROUGE-L F1, token F1 and exact match.

Each metric compares a model's response with the dataset's reference answer and returns a number between 0 and 1.
They need no server and no model, so they always run, but they only measure *overlap with one reference answer*,
not whether a response is correct (chapter 7 discusses where the two part ways).

All three use the same tokenization as Google's ``rouge-score`` package (without stemming), so the ROUGE-L score
here equals ``rouge_scorer.RougeScorer(["rougeL"]).score(reference, response)`` and token F1 equals its ``rouge1``
F-measure (ch07/tests/test_metrics.py checks both): the text is lower-cased, and the tokens are the maximal runs of
the ASCII letters ``a-z`` and digits ``0-9``. Everything else separates tokens and is dropped: punctuation,
whitespace, and also accented and non-Latin letters (``"café"`` gives the single token ``caf``).
"""

import re
from collections import Counter

TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text):
    """Lower-cased runs of ASCII letters and digits: ``"It's 10 cm."`` -> ``['it', 's', '10', 'cm']``."""
    return TOKEN.findall(text.lower())


def lcs_length(a, b):
    """Length of the longest common subsequence of two token lists (dynamic programming, one row at a time)."""
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def f_measure(overlap, response_length, reference_length):
    """Harmonic mean of precision (overlap / response length) and recall (overlap / reference length)."""
    if overlap == 0:
        return 0.0
    precision, recall = overlap / response_length, overlap / reference_length
    return 2 * precision * recall / (precision + recall)


def rouge_l_f1(response, reference):
    """ROUGE-L F1: how much of both texts one in-order (not necessarily contiguous) common word sequence covers."""
    response_tokens, reference_tokens = tokenize(response), tokenize(reference)
    overlap = lcs_length(response_tokens, reference_tokens)
    return f_measure(overlap, len(response_tokens), len(reference_tokens))


def token_f1(response, reference):
    """Token F1 (SQuAD-style bag of words, equal to ROUGE-1 F1): shared tokens, counted with multiplicity."""
    response_counts, reference_counts = Counter(tokenize(response)), Counter(tokenize(reference))
    overlap = sum((response_counts & reference_counts).values())
    return f_measure(overlap, response_counts.total(), reference_counts.total())


def exact_match(response, reference):
    """1.0 if both texts have the same tokens in the same order (case, punctuation and spacing ignored), else 0.0."""
    return float(tokenize(response) == tokenize(reference))


METRICS = {"rouge-l": rouge_l_f1, "token-f1": token_f1, "exact-match": exact_match}


def score_responses(entries, metric, response_key="model_response", reference_key="output"):
    """Score every entry's response against its reference with the metric named ``metric`` (a key of METRICS)."""
    score = METRICS[metric]
    return [score(entry[response_key], entry[reference_key]) for entry in entries]
