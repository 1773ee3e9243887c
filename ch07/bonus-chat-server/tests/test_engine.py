"""Generation's bookkeeping with a scripted model: a stop string split over tokens, held-back text, the ends."""

import torch

from engine import Backend, Generation, held_back


def scripted(pieces):
    """A Backend whose greedy answer is ``pieces`` (one token each), then end-of-sequence."""
    vocab = ["<eos>", *dict.fromkeys(pieces)]
    script = [vocab.index(p) for p in pieces] + [0]

    def step(new_ids, cache):
        logits = torch.zeros(len(vocab))
        logits[script[len(cache)]] = 1.0
        cache.append(new_ids)
        return logits

    return Backend(name="scripted", model=torch.nn.Identity(), context_length=100, encode=list,
                   decode=lambda ids: "".join(vocab[i] for i in ids), eos_id=0, new_cache=list, step=step)


def run(backend, max_tokens=50, stop=()):
    generation = Generation(backend, [1], max_tokens, temperature=0.0, stop=stop)
    return list(generation), generation


def test_stop_string_split_over_tokens_is_never_shown():
    pieces, generation = run(scripted(["Hel", "lo ", "##", "# ", "End", " more"]), stop=["###"])
    assert "".join(pieces) == "Hello "
    assert not any("#" in p for p in pieces)  # the first "##" waited until "#" decided
    assert generation.finish_reason == "stop" and generation.completion_tokens == 4
    assert len(pieces) == 4  # one piece per step of the model


def test_a_partial_stop_that_does_not_complete_is_shown_later():
    pieces, generation = run(scripted(["a", "##", "b"]), stop=["###"])
    assert pieces == ["a", "", "##b", ""]  # "##" waits; the end of sequence releases the rest
    assert generation.finish_reason == "stop" and generation.completion_tokens == 4


def test_length_limit_and_end_of_sequence():
    pieces, generation = run(scripted(["x", "y", "z"]), max_tokens=2)
    assert "".join(pieces) == "xy" and generation.finish_reason == "length" and generation.completion_tokens == 2
    pieces, generation = run(scripted(["x", "y"]))
    assert "".join(pieces) == "xy" and generation.finish_reason == "stop" and generation.completion_tokens == 3


def test_held_back():
    assert held_back("Hello #", ["###"]) == 1
    assert held_back("Hello ##", ["###", "##!"]) == 2
    assert held_back("Hello", ["###"]) == 0
    assert held_back("caf\ufffd", []) == 1  # half of a UTF-8 character
