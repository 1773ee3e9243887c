"""Tests of ch07/metrics.py: equal to the rouge-score package (Google's reference implementation, from PyPI) on the
real responses of the course data and on edge cases, plus values worked out by hand."""

import pytest
from rouge_score import rouge_scorer
from rouge_score import tokenize as rouge_tokenize

from evaluate_responses import download_example, load_entries
from metrics import exact_match, lcs_length, rouge_l_f1, score_responses, token_f1, tokenize

SCORER = rouge_scorer.RougeScorer(["rougeL", "rouge1"])  # no stemming, as in metrics.py
TWO_MODELS = ("model 1 response", "model 2 response")

EDGE_CASES = [  # (response, reference)
    ("", ""),
    ("", "The answer is 10 cm."),
    ("The answer is 10 cm.", ""),
    ("!!! ... ???", "..."),
    ("Hello, World!", "hello world"),
    ("HELLO", "hello"),
    ("It's time to go home.", "Its time to go home."),
    ("e-mail me at 10:30", "email me at 1030"),
    ("café au lait", "cafe au lait"),
    ("naïve résumé", "naive resume"),
    ("İstanbul", "istanbul"),
    ("\n1. Squirrel\n2. Eagle\n3. Tiger", "1. Squirrel\n2. Tiger\n3. Eagle"),
    ("the cat sat on the mat", "the mat sat on the cat"),
    ("a a a b", "a b b"),
    ("   \t\n", "   "),
    ("x", "y"),
]


@pytest.fixture(scope="module")
def real_pairs(tmp_path_factory):
    """(response, reference) for the 110 responses of the book's model and the 2 x 100 of the two-model file."""
    folder = tmp_path_factory.mktemp("data")
    one_model = load_entries(download_example("instruction-data-with-response.json", folder))
    two_models = load_entries(download_example("eval-example-data.json", folder), TWO_MODELS[0])
    return ([(e["model_response"], e["output"]) for e in one_model]
            + [(e[key], e["output"]) for e in two_models for key in TWO_MODELS])


def test_tokenizer_equals_rouge_scores(real_pairs):
    texts = [text for pair in real_pairs + EDGE_CASES for text in pair]
    assert [tokenize(t) for t in texts] == [rouge_tokenize.tokenize(t, None) for t in texts]
    assert tokenize("It's 10 cm, café!") == ["it", "s", "10", "cm", "caf"]


@pytest.mark.parametrize("source", ["real", "edge"])
def test_rouge_l_and_token_f1_equal_rouge_score(source, real_pairs):
    pairs = real_pairs if source == "real" else EDGE_CASES
    assert len(pairs) == (310 if source == "real" else len(EDGE_CASES))
    for response, reference in pairs:
        reference_scores = SCORER.score(reference, response)  # rouge-score takes (target, prediction)
        assert rouge_l_f1(response, reference) == pytest.approx(reference_scores["rougeL"].fmeasure, abs=1e-12), \
            (response, reference)
        assert token_f1(response, reference) == pytest.approx(reference_scores["rouge1"].fmeasure, abs=1e-12), \
            (response, reference)


def test_scores_on_real_data_are_spread_out(real_pairs):
    """Guards against a metric that agrees with the reference only because both give 0 (or 1) everywhere."""
    values = [rouge_l_f1(*pair) for pair in real_pairs]
    assert 0.2 < sum(values) / len(values) < 0.9
    assert sum(v == 1.0 for v in values) >= 20 and sum(0 < v < 1 for v in values) >= 100


def test_values_worked_out_by_hand():
    # Same six words in another order: longest common subsequence "the sat on the" (4 of 6 words).
    assert lcs_length("the cat sat on the mat".split(), "the mat sat on the cat".split()) == 4
    assert rouge_l_f1("the cat sat on the mat", "the mat sat on the cat") == pytest.approx(2 / 3)
    assert token_f1("the cat sat on the mat", "the mat sat on the cat") == 1.0  # a bag of words ignores order
    # 5 of the response's 7 tokens are in the 8-token reference, in order: P = 5/7, R = 5/8.
    response, reference = "The author is Jane Austen, I think.", "The author of the novel is Jane Austen."
    assert rouge_l_f1(response, reference) == pytest.approx(2 * (5 / 7) * (5 / 8) / (5 / 7 + 5 / 8))
    # A repeated token counts as often as it appears in both: one "a" and one "b" are shared, so P = 2/4, R = 2/3.
    assert token_f1("a a a b", "a b b") == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert rouge_l_f1("", "") == token_f1("", "") == 0.0  # as rouge-score: nothing to overlap


def test_exact_match_ignores_case_punctuation_and_spacing_only():
    assert exact_match("Hello,   World!", "hello world") == 1.0
    assert exact_match("\nThe interjection is 'Wow'.", "The interjection is Wow") == 1.0
    assert exact_match("The hypotenuse is 12 cm.", "The hypotenuse is 10 cm.") == 0.0
    assert exact_match("Jane Austen.", "The author is Jane Austen.") == 0.0
    assert exact_match("", "...") == 1.0  # neither has a token


def test_exact_match_is_a_perfect_rouge_l(real_pairs):
    """Same tokens in the same order <=> longest common subsequence covers both <=> rouge-score's F = 1."""
    for response, reference in real_pairs:
        assert exact_match(response, reference) == float(SCORER.score(reference, response)["rougeL"].fmeasure == 1)


def test_score_responses_reads_the_named_keys():
    entries = [{"output": "Jane Austen.", "model 2 response": "Jane Austen", "model_response": "Charles Dickens"}]
    assert score_responses(entries, "exact-match", "model 2 response") == [1.0]
    assert score_responses(entries, "exact-match") == [0.0]
    assert score_responses(entries, "token-f1", "model_response") == [0.0]
