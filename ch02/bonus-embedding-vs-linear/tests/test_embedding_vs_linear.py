"""An embedding lookup is a bias-free linear layer applied to one-hot vectors: same outputs, same gradients."""

import pytest
import torch
import torch.nn.functional as F

SIZES = [(6, 3, (5,)), (50, 16, (4, 7)), (1000, 32, (2, 3, 64))]   # vocab_size, emb_dim, shape of the id tensor


def layers_and_ids(vocab_size, emb_dim, ids_shape, seed=123):
    """An embedding, a linear layer holding a copy of its weight (transposed), and ids with repeats."""
    torch.manual_seed(seed)
    embedding = torch.nn.Embedding(vocab_size, emb_dim)
    linear = torch.nn.Linear(vocab_size, emb_dim, bias=False)
    with torch.no_grad():
        linear.weight.copy_(embedding.weight.T)
    ids = torch.randint(0, vocab_size, ids_shape)
    ids.view(-1)[-1] = ids.view(-1)[0]   # at least one repeated id
    return embedding, linear, ids


@pytest.mark.parametrize("vocab_size, emb_dim, ids_shape", SIZES)
def test_lookup_equals_one_hot_times_weight(vocab_size, emb_dim, ids_shape):
    embedding, linear, ids = layers_and_ids(vocab_size, emb_dim, ids_shape)
    one_hot = F.one_hot(ids, num_classes=vocab_size).float()   # (*ids_shape, vocab_size)
    looked_up = embedding(ids)                                  # (*ids_shape, emb_dim)
    assert looked_up.shape == (*ids_shape, emb_dim)
    assert torch.equal(one_hot @ embedding.weight, looked_up)
    assert torch.equal(linear(one_hot), looked_up)


@pytest.mark.parametrize("vocab_size, emb_dim, ids_shape", SIZES)
def test_gradients_agree(vocab_size, emb_dim, ids_shape):
    embedding, linear, ids = layers_and_ids(vocab_size, emb_dim, ids_shape)
    upstream = torch.randn(*ids_shape, emb_dim)
    (embedding(ids) * upstream).sum().backward()
    (linear(F.one_hot(ids, num_classes=vocab_size).float()) * upstream).sum().backward()
    assert torch.allclose(embedding.weight.grad, linear.weight.grad.T, atol=1e-6)


def test_each_row_gradient_is_the_sum_over_the_positions_of_its_id():
    embedding, _, ids = layers_and_ids(20, 4, (3, 10))
    upstream = torch.randn(3, 10, 4)
    (embedding(ids) * upstream).sum().backward()
    for token_id in range(20):
        expected = upstream[ids == token_id].sum(dim=0)   # zero for ids that do not occur
        assert torch.allclose(embedding.weight.grad[token_id], expected, atol=1e-6)


def test_an_untransposed_or_shifted_weight_breaks_the_equivalence():
    """The comparison is sharp: the wrong orientation or a one-row offset is detected."""
    embedding, _, ids = layers_and_ids(8, 8, (12,))
    one_hot = F.one_hot(ids, num_classes=8).float()
    assert not torch.equal(one_hot @ embedding.weight.T, embedding(ids))
    assert not torch.equal(one_hot @ embedding.weight.roll(1, dims=0), embedding(ids))
