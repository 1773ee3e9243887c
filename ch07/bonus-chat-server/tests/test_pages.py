"""The chat page and the classifier page in a real browser: Debian's Chromium, headless, driven by Playwright.

Playwright (from PyPI) drives the Chromium that the system's package manager installed (``/usr/bin/chromium``);
Playwright's own browser download is never used. Without that Chromium the browser tests are skipped with the
reason, except in CI (``CI=true``), which installs it and where its absence is a failure.

The classifier is a tiny GPTModel (one block of width 32) that chapter 6's code trains here for one epoch on the
real SMS Spam Collection (from the mirror or UCI): a few seconds, and it labels messages well above chance.
"""

import os
import socket
import time

import pandas as pd
import pytest
import tiktoken
import torch

from chat import build_page as build_chat_page
from classify import build_page as build_classifier_page
from classify import class_probabilities
from engine import SMOLLM2, Generation, smollm2_backend
from previous_chapters import (
    GPTConfig,
    GPTModel,
    SpamDataset,
    add_classification_head,
    batch_loss,
    create_data_loaders,
    download_sms_spam,
    load_classifier,
    save_classifier,
    write_splits,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TINY_CLASSIFIER = GPTConfig(context_length=64, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0, qkv_bias=True)
SPAM = "WINNER!! You have won a 1000 cash prize. Call 09061701461 now to claim your reward. T&C apply"
CHAT_MESSAGE = "Write one sentence about the sea."

if not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true":
    pytest.skip(f"the browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)",
                allow_module_level=True)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    """A tiny chapter 6 classifier trained for one epoch on the real training split, saved as chapter 6 saves."""
    folder = tmp_path_factory.mktemp("spam")
    paths = write_splits(download_sms_spam(folder / "sms_spam"), folder / "sms_spam")
    tokenizer = tiktoken.get_encoding("gpt2")
    datasets = [SpamDataset(paths[split], tokenizer, TINY_CLASSIFIER.context_length)
                for split in ["train", "validation", "test"]]
    torch.manual_seed(123)
    model = add_classification_head(GPTModel(TINY_CLASSIFIER), trainable_blocks=1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    model.train()
    for input_batch, target_batch in create_data_loaders(*datasets, batch_size=16)[0]:
        optimizer.zero_grad()
        batch_loss(input_batch, target_batch, model, "cpu", token="mean").backward()
        optimizer.step()
    save_classifier(folder / "model.pth", model, TINY_CLASSIFIER.context_length, token="mean")
    return folder / "model.pth", paths["test"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):  # only in CI, which installs it: elsewhere the module is skipped
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it with apt-get (package 'chromium')")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 900, "height": 640})
        yield context
        context.close()


def launched(page_app):
    port = free_port()
    page_app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return page_app, f"http://127.0.0.1:{port}/"


def test_the_page_labels_the_test_messages_well_above_chance(classifier_file):
    path, test_csv = classifier_file
    model, max_length, token = load_classifier(path)
    tokenizer = tiktoken.get_encoding("gpt2")
    test = SpamDataset(test_csv, tokenizer, max_length)
    texts = pd.read_csv(test_csv, dtype=str, keep_default_na=False)["Text"]
    predicted = [max(p := class_probabilities(text, model, tokenizer, max_length, token), key=p.get) == "spam"
                 for text in texts]
    accuracy = sum(int(guess) == label for guess, label in zip(predicted, test.labels)) / len(test.labels)
    assert accuracy > 0.8, accuracy  # half the test messages are spam: chance is 0.5


def test_chat_page_streams_the_answer(browser):
    backend = smollm2_backend()
    app, url = launched(build_chat_page({SMOLLM2: backend}))
    try:
        page = browser.new_page()
        page.goto(url)
        box = page.get_by_role("textbox").first
        box.wait_for(timeout=60_000)
        # Record every text the answer shows, as it changes, to see it grow.
        page.evaluate("""() => {
            window.seen = [];
            new MutationObserver(() => {
                const bots = document.querySelectorAll('[data-testid="bot"]');
                if (bots.length) window.seen.push(bots[bots.length - 1].innerText);
            }).observe(document.body, {subtree: true, childList: true, characterData: true});
        }""")
        box.fill(CHAT_MESSAGE)
        box.press("Enter")
        prompt_ids = backend.encode(backend.chat_prompt([{"role": "user", "content": CHAT_MESSAGE}]))
        expected = "".join(Generation(backend, prompt_ids, 200, temperature=0.0)).strip()
        answer = page.locator('[data-testid="bot"]').last
        deadline = time.monotonic() + 90
        while answer.count() == 0 or answer.inner_text().strip() != expected:
            assert time.monotonic() < deadline, f"the page shows {answer.inner_text()!r}, expected {expected!r}"
            time.sleep(0.2)
        seen = [text.strip() for text in page.evaluate("window.seen")]
        partial = {text for text in seen if text and text != expected and expected.startswith(text)}
        assert len(partial) >= 2, f"the answer did not grow piece by piece: {seen}"
        screenshot(page, "chat-page.png")
    finally:
        app.close()


def test_classifier_page_labels_a_spam_message(browser, classifier_file):
    app, url = launched(build_classifier_page(classifier_file[0]))
    try:
        page = browser.new_page()
        page.goto(url)
        box = page.get_by_label("message")
        box.wait_for(timeout=60_000)
        box.fill(SPAM)
        page.get_by_role("button", name="Submit").click()
        label = page.get_by_test_id("label-output-value")
        label.wait_for(timeout=30_000)
        page.wait_for_function("() => document.querySelector('[data-testid=\"label-output-value\"]')"
                               "?.innerText.trim().length > 0", timeout=30_000)
        assert label.inner_text().strip() == "spam"
        screenshot(page, "classifier-page.png")
    finally:
        app.close()


def screenshot(page, name):
    """Save a screenshot of the page for the README when LLM_COURSE_SCREENSHOTS names a folder."""
    folder = os.environ.get("LLM_COURSE_SCREENSHOTS")
    if folder:
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=os.path.join(folder, name))
