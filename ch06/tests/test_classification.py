"""Tests of classification.py: the data pipeline on the real SMS Spam Collection, the classifier and its training.

The data comes from the mirror (or the network); every model here is tiny and random, so nothing needs GPT-2's
weights.
"""

import io
import math
import re
import zipfile

import pandas as pd
import pytest
import tiktoken
import torch
from torch.utils.data import DataLoader, TensorDataset

from classification import (
    CLASS_NAMES,
    PAD_TOKEN_ID,
    SMS_SPAM_MEMBER,
    SMS_SPAM_URL,
    SpamDataset,
    add_classification_head,
    balance_classes,
    batch_loss,
    classification_logits,
    classify_text,
    create_data_loaders,
    download_sms_spam,
    load_classifier,
    loader_accuracy,
    loader_loss,
    read_sms_collection,
    save_classifier,
    train_classifier,
    write_splits,
)
from download import mirror_path
from previous_chapters import GPTConfig, GPTModel

TOKENIZER = tiktoken.get_encoding("gpt2")
TINY = GPTConfig(context_length=64, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0, qkv_bias=True,
                 tie_embeddings=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The collection downloaded (from the mirror), and its splits written, once for the module."""
    folder = tmp_path_factory.mktemp("sms_spam")
    collection = download_sms_spam(folder)
    return collection, write_splits(collection, folder)


def tiny_classifier(trainable_blocks=1, seed=123):
    torch.manual_seed(seed)
    return add_classification_head(GPTModel(TINY), num_classes=2, trainable_blocks=trainable_blocks)


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------------------ data

def test_class_counts_balance_and_split_sizes(data):
    collection, paths = data
    df = read_sms_collection(collection)
    assert df["Label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}
    balanced = balance_classes(df)
    assert balanced["Label"].value_counts().to_dict() == {"ham": 747, "spam": 747}
    assert set(balanced["Text"][balanced["Label"] == "spam"]) == set(df["Text"][df["Label"] == "spam"])
    splits = {name: pd.read_csv(path, keep_default_na=False) for name, path in paths.items()}
    assert {name: len(part) for name, part in splits.items()} == {"train": 1045, "validation": 149, "test": 300}
    assert all(list(part.columns) == ["Label", "Text"] for part in splits.values())
    assert all(set(part["Label"]) == {0, 1} for part in splits.values())
    # the three parts are the balanced set, each message once, with spam labelled 1
    together = pd.concat(splits.values(), ignore_index=True)
    assert sorted(together["Text"]) == sorted(balanced["Text"])
    spam = set(df["Text"][df["Label"] == "spam"])
    assert all((label == 1) == (text in spam) for label, text in zip(together["Label"], together["Text"]))


def test_balancing_and_split_are_reproducible_by_seed(data, tmp_path):
    collection, paths = data
    df = read_sms_collection(collection)
    assert balance_classes(df, seed=123).equals(balance_classes(df, seed=123))
    ham = {seed: set(balance_classes(df, seed)["Text"][lambda t: t.index < 747]) for seed in (123, 7)}
    assert ham[123] != ham[7]
    again = write_splits(collection, tmp_path)
    assert all(again[name].read_bytes() == paths[name].read_bytes() for name in paths)


@pytest.mark.parametrize("bad_line, message", [
    ("ham no tab here", "line 2: no tab"),
    ("spm\tFree entry in a weekly prize draw", "line 2: unknown label 'spm'"),
    ("\tmessage without label", "line 2: unknown label ''"),
])
def test_malformed_line_is_named_and_nothing_is_written(tmp_path, bad_line, message):
    bad = write_lines(tmp_path / "collection.tsv", ["ham\tSee you at noon", bad_line, "spam\tWIN a prize now"])
    with pytest.raises(ValueError, match=message):
        write_splits(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_wrong_member_in_the_zip_is_refused_and_not_extracted(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    archive = mirror_path(mirror, SMS_SPAM_URL)
    archive.parent.mkdir(parents=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr(SMS_SPAM_MEMBER, "ham\tnot the real collection\n")
    archive.write_bytes(buffer.getvalue())
    monkeypatch.setenv("LLM_COURSE_MIRROR", str(mirror))
    with pytest.raises(ValueError, match="is not the published file"):
        download_sms_spam(tmp_path / "data")
    assert not (tmp_path / "data" / SMS_SPAM_MEMBER).exists()
    archive.write_bytes(b"not a zip at all")
    (tmp_path / "data" / "sms_spam_collection.zip").unlink()
    with pytest.raises(ValueError, match="is not the SMS Spam Collection's zip"):
        download_sms_spam(tmp_path / "data")


def write_csv(path, rows):
    pd.DataFrame(rows, columns=["Label", "Text"]).to_csv(path, index=False)
    return path


def test_padding_and_truncation(tmp_path):
    messages = ["Hi", "Call me when you get home, the keys are under the mat", "NA"]
    csv = write_csv(tmp_path / "train.csv", [(0, messages[0]), (1, messages[1]), (0, messages[2])])
    encoded = [TOKENIZER.encode(m) for m in messages]
    longest = max(len(ids) for ids in encoded)

    dataset = SpamDataset(csv, TOKENIZER)
    assert dataset.max_length == longest and len(dataset) == 3
    for (ids, label), expected, expected_label in zip(dataset, encoded, [0, 1, 0]):
        assert ids.shape == (longest,) and ids.dtype == torch.long and label.item() == expected_label
        assert ids.tolist() == expected + [PAD_TOKEN_ID] * (longest - len(expected))

    short = SpamDataset(csv, TOKENIZER, max_length=3)
    assert [ids.tolist() for ids, _ in short] == [encoded[0] + [PAD_TOKEN_ID] * (3 - len(encoded[0])),
                                                  encoded[1][:3], encoded[2] + [PAD_TOKEN_ID] * (3 - len(encoded[2]))]


@pytest.mark.parametrize("rows, columns, message", [
    ([(0, "ok"), (2, "three classes?")], ["Label", "Text"], "data row 2: label '2' is not 0 or 1"),
    ([(0, "ok"), ("spam", "text label")], ["Label", "Text"], "data row 2: label 'spam' is not 0 or 1"),
    ([(0, "ok")], ["Class", "Text"], "lacks the column(s) ['Label']"),
    ([], ["Label", "Text"], "holds no messages"),
])
def test_bad_csv_files_are_named(tmp_path, rows, columns, message):
    path = tmp_path / "bad.csv"
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    with pytest.raises(ValueError, match=re.escape(message)):
        SpamDataset(path, TOKENIZER)


def test_loaders_batch_shapes_and_dropped_last_batch(data):
    _, paths = data
    datasets = [SpamDataset(paths["train"], TOKENIZER)]
    datasets += [SpamDataset(paths[name], TOKENIZER, datasets[0].max_length) for name in ("validation", "test")]
    train_loader, val_loader, test_loader = create_data_loaders(*datasets)
    assert (len(train_loader), len(val_loader), len(test_loader)) == (130, 19, 38)  # 1,045 // 8; 149 and 300 / 8
    inputs, labels = next(iter(train_loader))
    assert inputs.shape == (8, datasets[0].max_length) and labels.shape == (8,)
    assert sum(len(labels) for _, labels in val_loader) == 149
    orders = [[labels.tolist() for _, labels in create_data_loaders(*datasets, seed=seed)[0]] for seed in (123, 123, 1)]
    assert orders[0] == orders[1] != orders[2]  # the seeded order repeats


# ---------------------------------------------------------------------------------------------------------- model

def test_head_swap_and_freeze_flags():
    torch.manual_seed(123)
    model = GPTModel(TINY)
    embedding = model.tok_emb.weight.detach().clone()
    add_classification_head(model)
    assert model.out_head.weight.shape == (2, 16) and model.out_head.bias.shape == (2,)
    assert torch.equal(model.tok_emb.weight, embedding)  # the old tied head took nothing with it
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in model.named_parameters()
                         if name.startswith(("trf_blocks.1.", "final_norm.", "out_head."))}
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 2)

    two = {n for n, p in tiny_classifier(trainable_blocks=2).named_parameters() if p.requires_grad}
    assert {n.split(".")[1] for n in two if n.startswith("trf_blocks")} == {"0", "1"} and "tok_emb.weight" not in two
    assert all(p.requires_grad for p in tiny_classifier(trainable_blocks="all").parameters())
    none = {n for n, p in tiny_classifier(trainable_blocks=0).named_parameters() if p.requires_grad}
    assert none == {"final_norm.scale", "final_norm.shift", "out_head.weight", "out_head.bias"}
    for wrong in (3, -1, "last"):
        with pytest.raises(ValueError, match="trainable_blocks must be"):
            add_classification_head(GPTModel(TINY), trainable_blocks=wrong)


def test_last_token_logits_and_causal_attention():
    model = tiny_classifier().eval()
    torch.manual_seed(0)
    inputs = torch.randint(0, 1000, (3, 10))
    outputs = model(inputs)  # (3, 10, 2)
    assert torch.equal(classification_logits(model, inputs), outputs[:, -1, :])
    assert torch.equal(classification_logits(model, inputs, token="first"), outputs[:, 0, :])
    padded = inputs.clone()
    padded[0, 6:] = PAD_TOKEN_ID
    mean = classification_logits(model, padded, token="mean")
    assert torch.allclose(mean[0], model(padded)[0, :6].mean(dim=0))
    assert torch.allclose(mean[1], model(padded)[1].mean(dim=0))
    with pytest.raises(ValueError, match="unknown token choice"):
        classification_logits(model, inputs, token="middle")
    # Causal attention: a change of the first token reaches the last position; a change of the last token cannot
    # reach the first position.
    changed_first, changed_last = inputs.clone(), inputs.clone()
    changed_first[:, 0] += 1
    changed_last[:, -1] += 1
    assert not torch.allclose(classification_logits(model, changed_first), classification_logits(model, inputs))
    assert torch.equal(model(changed_last)[:, 0, :], outputs[:, 0, :])


class FixedScores(torch.nn.Module):
    """A stand-in 'model' whose class scores are its input ids: row [a, b] at the last position scores (a, b)."""

    def forward(self, input_batch):
        return input_batch.float().unsqueeze(1).repeat(1, 3, 1)  # (batch, 3 positions, 2 classes)


def test_accuracy_and_loss_against_a_hand_computation():
    scores = torch.tensor([[2, 0], [0, 3], [1, 0], [0, 1], [5, 1]])  # predicted: 0, 1, 0, 1, 0
    labels = torch.tensor([0, 1, 1, 1, 1])  # right: yes, yes, no, yes, no
    loader = DataLoader(TensorDataset(scores, labels), batch_size=2)
    model = FixedScores()
    assert loader_accuracy(loader, model, "cpu") == pytest.approx(3 / 5)
    assert loader_accuracy(loader, model, "cpu", num_batches=1) == 1.0
    assert loader_accuracy(loader, model, "cpu", num_batches=2) == pytest.approx(3 / 4)

    def cross_entropy(row, label):
        return math.log(sum(math.exp(s) for s in row)) - row[label]

    by_hand = [cross_entropy(row.tolist(), label) for row, label in zip(scores, labels.tolist())]
    assert batch_loss(scores[:2], labels[:2], model, "cpu").item() == pytest.approx(sum(by_hand[:2]) / 2)
    batches = [by_hand[0:2], by_hand[2:4], by_hand[4:]]
    assert loader_loss(loader, model, "cpu") == pytest.approx(sum(sum(b) / len(b) for b in batches) / 3)
    with pytest.raises(ValueError, match="no batches"):
        loader_accuracy(DataLoader(TensorDataset(scores[:0], labels[:0])), model, "cpu")


def test_short_training_on_real_messages_lowers_the_loss(data):
    _, paths = data
    dataset = SpamDataset(paths["train"], TOKENIZER, max_length=32)
    loader = DataLoader(torch.utils.data.Subset(dataset, range(48)), batch_size=8)
    model = tiny_classifier(trainable_blocks="all")
    before = loader_loss(loader, model, "cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    history = train_classifier(model, loader, loader, optimizer, "cpu", num_epochs=4, eval_freq=6, eval_iter=6)
    assert not model.training
    after = loader_loss(loader, model, "cpu")
    assert after < 0.7 * before, (before, after)
    assert history["evaluations"]["step"] == [1, 7, 13, 19]
    assert history["evaluations"]["examples_seen"] == [8, 56, 104, 152]
    assert history["epochs"]["epoch"] == [1, 2, 3, 4] and len(history["epochs"]["val_accuracy"]) == 4


def test_frozen_parameters_do_not_change_in_training(data):
    _, paths = data
    loader = DataLoader(torch.utils.data.Subset(SpamDataset(paths["train"], TOKENIZER, 16), range(16)), batch_size=8)
    model = tiny_classifier()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.1)
    train_classifier(model, loader, loader, optimizer, "cpu", num_epochs=1, eval_freq=5, eval_iter=1)
    now = dict(model.named_parameters())
    assert all(torch.equal(now[n], value) for n, value in frozen.items())
    assert all(not torch.equal(now[n], value) for n, value in trained.items())


def test_classify_text_pads_like_training_and_names_the_class():
    model = tiny_classifier().eval()
    message = "Congratulations, you have won a cruise! Text CLAIM to 80085"
    ids = TOKENIZER.encode(message)
    with torch.no_grad():
        model.out_head.weight.zero_()
        for bias, expected in [([0.0, 1.0], "spam"), ([1.0, 0.0], "not spam")]:
            model.out_head.bias.copy_(torch.tensor(bias))
            assert classify_text(message, model, TOKENIZER, "cpu", max_length=40) == expected
    torch.manual_seed(1)
    model = tiny_classifier().eval()
    for max_length in (40, 5):
        padded = (ids + [PAD_TOKEN_ID] * 40)[:max_length]
        expected = CLASS_NAMES[classification_logits(model, torch.tensor([padded])).argmax().item()]
        assert classify_text(message, model, TOKENIZER, "cpu", max_length=max_length) == expected
    assert classify_text(message, model, TOKENIZER, "cpu", max_length=1000) in CLASS_NAMES  # cut to the context


def test_save_and_load_classifier(tmp_path):
    model = tiny_classifier().eval()
    save_classifier(tmp_path / "model.pth", model, max_length=20, token="mean")
    loaded, max_length, token = load_classifier(tmp_path / "model.pth")
    assert (max_length, token) == (20, "mean") and not loaded.training
    inputs = torch.randint(0, 1000, (2, 20))
    assert torch.equal(loaded(inputs), model(inputs))
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="not a classifier written by save_classifier"):
        load_classifier(tmp_path / "bare.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.pth", "model.pth"]  # no temporary file left
