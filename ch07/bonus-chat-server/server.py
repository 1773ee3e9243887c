"""An OpenAI-compatible server for the course's models, on FastAPI and uvicorn.

    python server.py                                   # SmolLM2-135M-Instruct on http://127.0.0.1:8000
    python server.py --ch05 ../../ch05/output/model.pth --ch07 ../output/gpt2-355M-sft.pth
    python server.py --host 0.0.0.0 --allow-remote     # reachable from other computers (prints a warning)

It serves ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions``, whole (JSON) or streamed
(server-sent events, ``"stream": true``), with ``max_tokens``, ``temperature``, ``top_k``, ``seed`` and ``stop``.
Any OpenAI-compatible client works: the ``openai`` package with ``base_url="http://127.0.0.1:8000/v1"``, or chapter
7's judge (``evaluate_responses.py --metric judge --api openai --url http://127.0.0.1:8000 --model smollm2``).

One generation runs at a time (the others wait in line, first come first served); a client that disconnects stops
its generation before the next token. Bad requests get OpenAI's error format, ``{"error": {"message": ...}}``.
"""

import argparse
import asyncio
import json
import time
import uuid
from typing import Literal

import anyio.to_thread
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from cli import add_address_arguments, add_model_arguments, checked_host, load_backends
from engine import Generation

DEFAULT_MAX_TOKENS = 256  # when a request gives no max_tokens (and the context has room for them)


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class Sampling(BaseModel):
    """What both endpoints accept. Unknown fields are ignored, as OpenAI-compatible servers usually do."""

    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_k: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = Field(None, max_length=4)
    stream: bool = False
    n: int = Field(1, ge=1, le=1)  # one answer per request

    def stops(self):
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if any(not s for s in stops):
            raise APIError(400, "stop strings must not be empty", "stop")
        return stops


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens in OpenAI's chat API


class CompletionRequest(Sampling):
    prompt: str


class APIError(Exception):
    """An error answered with ``status`` and OpenAI's JSON error body."""

    def __init__(self, status, message, param=None, code=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self):
        kind = "not_found_error" if self.status == 404 else "invalid_request_error"
        return JSONResponse(status_code=self.status, content={
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}})


class Stats:
    """Counters the tests read: generations started, finished and stopped early, tokens generated, and the most
    generations that ever ran at the same time."""

    def __init__(self):
        self.started = self.finished = self.cancelled = self.tokens = self.running = self.most_running = 0


def create_app(backends, default_max_tokens=DEFAULT_MAX_TOKENS):
    """The FastAPI application serving ``backends`` ({name: engine.Backend})."""
    app = FastAPI(title="LLM course model server")
    app.state.stats = Stats()
    lock = asyncio.Lock()  # one generation at a time; waiting requests queue on it in arrival order

    @app.exception_handler(APIError)
    async def api_error(request, error):
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, error):
        problems = error.errors()
        if any(p["type"] == "json_invalid" for p in problems):
            return APIError(400, f"the request body is not valid JSON: {problems[0].get('ctx', {}).get('error')}"
                            ).response()
        first = problems[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return APIError(400, f"invalid request: {where or 'body'}: {first['msg']}", where or None).response()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "llm-course"}
                                           for name in backends]}

    def backend_for(name):
        if name not in backends:
            raise APIError(404, f"The model '{name}' does not exist on this server; it serves: "
                           f"{', '.join(backends)}", "model", "model_not_found")
        return backends[name]

    def start(backend, prompt, request, max_tokens):
        """A Generation for ``prompt``, after checking that prompt and answer fit into the model's context."""
        prompt_ids = backend.encode(prompt)
        if not prompt_ids:
            raise APIError(400, "the prompt is empty", "prompt")
        room = backend.context_length - len(prompt_ids)
        if room <= 0:
            raise APIError(400, f"the prompt has {len(prompt_ids)} tokens; model '{backend.name}' has a context of "
                           f"{backend.context_length} tokens", "messages", "context_length_exceeded")
        if max_tokens is None:
            max_tokens = min(default_max_tokens, room)
        if max_tokens > room:
            raise APIError(400, f"This model's maximum context length is {backend.context_length} tokens; you "
                           f"requested {len(prompt_ids) + max_tokens} ({len(prompt_ids)} in the prompt, {max_tokens} "
                           "for the answer). Shorten the prompt or lower max_tokens.", "max_tokens",
                           "context_length_exceeded")
        return Generation(backend, prompt_ids, max_tokens, request.temperature, request.top_k, request.seed,
                          request.stops())

    async def pieces(generation, http_request):
        """The generation's text pieces, produced in a worker thread under the lock, one token per step; stops
        when the client is gone."""
        stats = app.state.stats
        async with lock:
            stats.started += 1
            stats.running += 1
            stats.most_running = max(stats.most_running, stats.running)
            steps, finished = iter(generation), False
            try:
                while not await http_request.is_disconnected():
                    piece = await anyio.to_thread.run_sync(next, steps, None)  # finishes its step if cancelled
                    if piece is None:
                        finished = True
                        break
                    stats.tokens += 1
                    if piece:
                        yield piece
            finally:
                stats.running -= 1
                stats.finished += finished
                stats.cancelled += not finished

    def usage(generation):
        prompt_tokens = len(generation.prompt_ids)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": generation.completion_tokens,
                "total_tokens": prompt_tokens + generation.completion_tokens}

    async def respond(body, generation, http_request, chat):
        """The whole answer as JSON, or a stream of server-sent events ending with ``data: [DONE]``."""
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        header = {"id": ident, "object": "chat.completion" if chat else "text_completion",
                  "created": int(time.time()), "model": body.model}

        def choice(text, finish_reason, streamed):
            if not chat:
                return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            key, message = ("delta", {"content": text} if text else {}) if streamed else (
                "message", {"role": "assistant", "content": text})
            return {"index": 0, key: message, "finish_reason": finish_reason}

        if not body.stream:
            text = "".join([piece async for piece in pieces(generation, http_request)])
            return {**header, "choices": [choice(text, generation.finish_reason, False)], "usage": usage(generation)}

        def event(choice_data):
            return f"data: {json.dumps({**header, **chunk, 'choices': [choice_data]})}\n\n"

        chunk = {"object": "chat.completion.chunk"} if chat else {}

        async def events():
            if chat:
                yield event({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
            async for piece in pieces(generation, http_request):
                yield event(choice(piece, None, True))
            yield event(choice("", generation.finish_reason, True))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, http_request: Request):
        backend = backend_for(body.model)
        if backend.chat_prompt is None:
            raise APIError(400, f"'{body.model}' is a text-completion model: use /v1/completions", "model")
        try:
            prompt = backend.chat_prompt([m.model_dump() for m in body.messages])
        except ValueError as e:
            raise APIError(400, str(e), "messages") from e
        generation = start(backend, prompt, body, body.max_completion_tokens or body.max_tokens)
        return await respond(body, generation, http_request, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http_request: Request):
        generation = start(backend_for(body.model), body.prompt, body, body.max_tokens)
        return await respond(body, generation, http_request, chat=False)

    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    add_address_arguments(parser, port=8000)
    parser.add_argument("--default-max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help=f"answer length when a request sets no max_tokens (default: {DEFAULT_MAX_TOKENS})")
    args = parser.parse_args(argv)
    host = checked_host(parser, args)
    backends = load_backends(parser, args)
    print(f"Serving {', '.join(backends)} on http://{host}:{args.port}/v1", flush=True)
    uvicorn.run(create_app(backends, args.default_max_tokens), host=host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
