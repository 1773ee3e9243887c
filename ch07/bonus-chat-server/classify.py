"""A page for chapter 6's spam classifier, built with Gradio: a message in, spam or not and its probability out.

    python classify.py --classifier ../../ch06/output/model.pth    # prints the page's address

The classifier is a file written by chapter 6's ``gpt_class_finetune.py`` (``save_classifier``): a GPTModel with a
two-class head, the input length it was trained with and the position it reads its answer at.
"""

import argparse
import pickle
from pathlib import Path

import gradio as gr
import tiktoken
import torch

from cli import add_address_arguments, checked_host, load_problem
from previous_chapters import CLASS_NAMES, PAD_TOKEN_ID, classification_logits, load_classifier


def class_probabilities(text, model, tokenizer, max_length, token):
    """{class name: probability} for one message, prepared as chapter 6 prepares its training messages: cut to
    ``max_length`` tokens (and the context length), padded up to that length with <|endoftext|>."""
    length = min(max_length, model.cfg.context_length)
    ids = tokenizer.encode(text)[:length]
    input_batch = torch.tensor([ids + [PAD_TOKEN_ID] * (length - len(ids))])  # (1, length)
    with torch.no_grad():
        probabilities = torch.softmax(classification_logits(model, input_batch, token)[0], dim=-1)
    return dict(zip(CLASS_NAMES, probabilities.tolist()))


def build_page(classifier_path):
    model, max_length, token = load_classifier(classifier_path)
    tokenizer = tiktoken.get_encoding("gpt2")
    return gr.Interface(
        lambda text: class_probabilities(text, model, tokenizer, max_length, token),
        inputs=gr.Textbox(label="message", lines=3, placeholder="Type or paste an SMS message"),
        outputs=gr.Label(label="spam or not spam"),
        title="Chapter 6's spam classifier", flagging_mode="never", analytics_enabled=False,
        description=f"The classifier in {Path(classifier_path).name}, running on this computer.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classifier", type=Path, required=True,
                        help="a classifier file written by chapter 6's gpt_class_finetune.py (output/model.pth)")
    add_address_arguments(parser, port=7861)
    args = parser.parse_args(argv)
    host = checked_host(parser, args)
    try:
        page = build_page(args.classifier)
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as e:
        parser.error(f"could not load the classifier {args.classifier}: {load_problem(e)}")
    page.launch(server_name=host, server_port=args.port)  # prints the address


if __name__ == "__main__":
    main()
