"""A chat page for the course's models, built with Gradio: answers appear token by token.

    python chat.py                                   # SmolLM2-135M-Instruct; prints the page's address
    python chat.py --ch07 ../output/gpt2-355M-sft.pth --ch05 ../../ch05/output/model.pth

The page offers every loaded model in a drop-down list. Chat models (SmolLM2, chapter 7's finetuned GPT-2) answer
the conversation; chapter 5's pretrained model, which was never taught to chat, continues the text of the last
message. Gradio queues the requests of all visitors and runs one at a time; closing the page stops its answer.
"""

import argparse

import gradio as gr

from cli import add_address_arguments, add_model_arguments, checked_host, load_backends
from engine import Generation


def message_text(content):
    """A chat message's text: Gradio gives a string, or a list of parts of which the text parts count."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def build_page(backends):
    """The Gradio app: a chat box, the model to talk to, and the answer's length and temperature."""

    def respond(message, history, model_name, max_tokens, temperature):
        backend = backends[model_name]
        max_tokens = min(int(max_tokens), backend.context_length - 1)  # leave room for at least one prompt token
        messages = [{"role": m["role"], "content": message_text(m["content"])} for m in history]
        messages.append({"role": "user", "content": message})
        prompt = message if backend.chat_prompt is None else backend.chat_prompt(messages)
        prompt_ids = backend.encode(prompt)[-(backend.context_length - max_tokens):]  # keep the latest turns
        answer = ""
        for piece in Generation(backend, prompt_ids, max_tokens, temperature):
            answer += piece
            yield answer

    return gr.ChatInterface(
        respond, title="Chat with the course's models", analytics_enabled=False,
        description="Answers are generated on this computer by the course's own model code and KV cache.",
        additional_inputs=[gr.Dropdown(list(backends), value=next(iter(backends)), label="model"),
                           gr.Slider(1, 512, value=200, step=1, label="max tokens"),
                           gr.Slider(0.0, 2.0, value=0.0, step=0.1, label="temperature (0: greedy)")],
        additional_inputs_accordion=gr.Accordion("model and settings", open=False))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    add_address_arguments(parser, port=7860)
    args = parser.parse_args(argv)
    host = checked_host(parser, args)
    page = build_page(load_backends(parser, args))
    page.launch(server_name=host, server_port=args.port)  # prints the address


if __name__ == "__main__":
    main()
