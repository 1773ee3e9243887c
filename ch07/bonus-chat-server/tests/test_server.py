"""The server as clients use it: HTTP on 127.0.0.1 (ephemeral port), the official openai client, 16 at once.

The models: SmolLM2-135M-Instruct as installed (real answers), and a tiny GPTModel with random weights saved in
chapter 5's checkpoint format in a temporary folder (fast, for the paths of chapter 5's and chapter 7's models).
"""

import json
import os
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import SimpleNamespace

import httpx
import pytest
import torch
import uvicorn
from openai import OpenAI

from chat import build_page as build_chat_page
from cli import checked_host, load_backends
from engine import CH05_GPT, CH07_GPT, SMOLLM2, Generation, gpt_backend, smollm2_backend
from kv_cache import generate_greedy_cached
from llama import generate
from previous_chapters import GPTConfig, GPTModel, save_checkpoint

TINY = GPTConfig(context_length=1024, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0, qkv_bias=True)
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def start_server(app):
    """Run ``app`` with uvicorn in a thread on 127.0.0.1 and a free port; return (url, uvicorn server, thread)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("tiny") / "model.pth"
    save_checkpoint(path, GPTModel(TINY))
    return path


@pytest.fixture(scope="module")
def served(tiny_checkpoint):
    from server import create_app

    backends = {SMOLLM2: smollm2_backend(), CH05_GPT: gpt_backend(tiny_checkpoint, CH05_GPT, instruct=False),
                CH07_GPT: gpt_backend(tiny_checkpoint, CH07_GPT, instruct=True)}
    app = create_app(backends, default_max_tokens=16)
    url, server, thread = start_server(app)
    yield SimpleNamespace(url=url, stats=app.state.stats, backends=backends)
    server.should_exit = True
    thread.join(timeout=10)


def post(served, path, body, **kwargs):
    return httpx.post(served.url + path, json=body, timeout=60, **kwargs)


def sse_data(response_lines):
    """The parsed ``data:`` payloads of a server-sent-event stream, and whether it ended with ``[DONE]``."""
    payloads = [line.removeprefix("data: ") for line in response_lines if line.startswith("data: ")]
    return [json.loads(p) for p in payloads if p != "[DONE]"], payloads[-1:] == ["[DONE]"]


def test_models_lists_every_served_model(served):
    reply = httpx.get(served.url + "/v1/models", timeout=10)
    assert reply.status_code == 200
    assert [m["id"] for m in reply.json()["data"]] == [SMOLLM2, CH05_GPT, CH07_GPT]


def test_chat_completion_answers_with_smollm2(served):
    reply = post(served, "/v1/chat/completions", {"model": SMOLLM2, "messages": FRANCE, "temperature": 0,
                                                  "max_tokens": 30})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert "Paris" in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"  # ended by <|im_end|>, before 30 tokens
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_greedy_completion_equals_the_course_generate(served):
    """Temperature 0 gives the tokens of the Llama's own greedy ``generate`` and of chapter 4's cached one."""
    prompt = "The three primary colors are"
    for name, reference in [(SMOLLM2, lambda b, ids: generate(b.model, ids, 12)),
                            (CH05_GPT, lambda b, ids: generate_greedy_cached(b.model, ids, 12, 1024))]:
        reply = post(served, "/v1/completions", {"model": name, "prompt": prompt, "temperature": 0,
                                                 "max_tokens": 12})
        assert reply.status_code == 200, reply.text
        backend = served.backends[name]
        ids = torch.tensor([backend.encode(prompt)])
        expected = backend.decode(reference(backend, ids)[0, ids.shape[1]:].tolist())
        assert reply.json()["choices"][0]["text"] == expected
        assert reply.json()["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": SMOLLM2, "messages": FRANCE}),
    ("/v1/completions", {"model": CH05_GPT, "prompt": "Every effort moves you"}),
    ("/v1/chat/completions", {"model": CH07_GPT, "messages": FRANCE}),
])
def test_stream_gives_the_same_answer_as_json(served, path, body):
    body = {**body, "temperature": 0.8, "seed": 7, "max_tokens": 10}
    whole = post(served, path, body).json()["choices"][0]
    with httpx.stream("POST", served.url + path, json={**body, "stream": True}, timeout=60) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        chunks, done = sse_data(list(reply.iter_lines()))
    assert done
    chat = path == "/v1/chat/completions"
    pieces = [c["choices"][0]["delta"].get("content", "") if chat else c["choices"][0]["text"] for c in chunks]
    assert len([p for p in pieces if p]) > 1  # streamed in several pieces
    assert "".join(pieces) == (whole["message"]["content"] if chat else whole["text"])
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["finish_reason"]
    if chat:
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


def test_seed_temperature_and_top_k(served):
    def text(**settings):
        body = {"model": CH05_GPT, "prompt": "Every effort moves you", "max_tokens": 20, **settings}
        return post(served, "/v1/completions", body).json()["choices"][0]["text"]

    assert text(seed=1) == text(seed=1)
    assert text(seed=1) != text(seed=2)
    assert text(seed=1, top_k=1) == text(temperature=0) == text(seed=2, top_k=1)


def test_stop_strings_cut_the_answer(served):
    body = {"model": SMOLLM2, "prompt": "One, two, three, four, five,", "temperature": 0, "max_tokens": 12}
    full = post(served, "/v1/completions", body).json()["choices"][0]["text"]
    stop = full.strip().split()[2]  # a word in the middle of the answer
    reply = post(served, "/v1/completions", {**body, "stop": ["never appears", stop]}).json()["choices"][0]
    assert reply["text"] == full[:full.index(stop)]
    assert reply["finish_reason"] == "stop"


def error_of(reply, status):
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize("body, status, words", [
    ({"model": "gpt-5", "messages": FRANCE}, 404, "does not exist"),
    ({"messages": FRANCE}, 400, "model"),
    ({"model": SMOLLM2, "messages": []}, 400, "messages"),
    ({"model": SMOLLM2, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ({"model": SMOLLM2, "messages": FRANCE, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": SMOLLM2, "messages": FRANCE, "max_tokens": "many"}, 400, "max_tokens"),
    ({"model": SMOLLM2, "messages": FRANCE, "temperature": -1}, 400, "temperature"),
    ({"model": SMOLLM2, "messages": FRANCE, "n": 2}, 400, "n"),
    ({"model": SMOLLM2, "messages": FRANCE, "stop": ""}, 400, "stop"),
    ({"model": SMOLLM2, "messages": FRANCE, "max_tokens": 9000}, 400, "maximum context length is 8192"),
    ({"model": CH05_GPT, "messages": FRANCE}, 400, "/v1/completions"),
    ({"model": CH07_GPT, "messages": [{"role": "system", "content": "Be brief."}]}, 400, "'user'"),
])
def test_bad_chat_requests(served, body, status, words):
    assert words in error_of(post(served, "/v1/chat/completions", body), status)["message"]


@pytest.mark.parametrize("body, status, words", [
    ({"model": "gpt-5", "prompt": "Hi"}, 404, "does not exist"),
    ({"model": CH05_GPT, "prompt": "word " * 1100}, 400, "context of 1024 tokens"),
    ({"model": CH05_GPT, "prompt": "word " * 1000, "max_tokens": 100}, 400, "maximum context length is 1024"),
    ({"model": CH05_GPT, "prompt": ""}, 400, "empty"),
])
def test_bad_completion_requests(served, body, status, words):
    assert words in error_of(post(served, "/v1/completions", body), status)["message"]


def test_malformed_json_is_refused(served):
    reply = httpx.post(served.url + "/v1/chat/completions", content=b'{"model": "smollm2", "messages": [',
                       headers={"Content-Type": "application/json"}, timeout=10)
    assert "not valid JSON" in error_of(reply, 400)["message"]


def test_a_client_that_disconnects_stops_its_generation(served):
    body = {"model": CH05_GPT, "prompt": "Every effort moves you", "seed": 3, "max_tokens": 1000}
    whole = post(served, "/v1/completions", body).json()
    assert whole["usage"]["completion_tokens"] == 1000  # without a disconnect it runs to the end
    before = vars(served.stats).copy()
    with httpx.stream("POST", served.url + "/v1/completions", json={**body, "stream": True}, timeout=60) as reply:
        next(reply.iter_lines())  # the first event arrived: generation is running
    deadline = time.monotonic() + 20
    while served.stats.cancelled == before["cancelled"] and time.monotonic() < deadline:
        time.sleep(0.05)
    tokens = served.stats.tokens - before["tokens"]
    assert served.stats.cancelled == before["cancelled"] + 1
    assert served.stats.finished == before["finished"]
    assert tokens < 1000, f"{tokens} tokens were generated for a client that left"
    time.sleep(0.3)
    assert served.stats.tokens - before["tokens"] == tokens  # and nothing more afterwards


def test_a_request_abandoned_while_waiting_never_runs(served):
    """A client that leaves while another generation runs gets no token: its request is dropped, not run later."""
    body = {"model": CH05_GPT, "prompt": "Every effort moves you", "seed": 3, "max_tokens": 300}
    before = vars(served.stats).copy()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, served, "/v1/completions", body)
        while served.stats.started == before["started"]:
            time.sleep(0.01)
        request = json.dumps({**body, "stream": True}).encode()
        host, port = served.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as waiting:  # sends the request, then leaves
            waiting.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(request), request))
            time.sleep(0.2)
        assert running.result().json()["usage"]["completion_tokens"] == 300
    time.sleep(1.0)  # time for the abandoned request to run, if it were to
    assert served.stats.finished - before["finished"] == 1
    assert served.stats.tokens - before["tokens"] == 300  # all of them for the request that stayed


def test_sixteen_requests_at_once_are_all_answered_in_order_of_their_own(served):
    """16 simultaneous chats with distinct prompts and seeds: each gets exactly the answer it gets alone."""
    backend = served.backends[SMOLLM2]
    requests = [{"model": SMOLLM2, "messages": [{"role": "user", "content": f"Name an animal that starts with "
                                                 f"the letter {chr(65 + i)}."}],
                 "temperature": 1.0, "top_k": 50, "seed": 100 + i, "max_tokens": 6} for i in range(16)]
    before = vars(served.stats).copy()

    def timed(body):
        start = time.perf_counter()
        reply = post(served, "/v1/chat/completions", body)
        return reply, time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(timed, requests))
    wall = time.perf_counter() - start
    assert wall < 120
    latencies = sorted(seconds for _, seconds in results)
    print(f"\n16 simultaneous requests in {wall:.1f} s: latency p50 {statistics.median(latencies):.2f} s, "
          f"p95 {latencies[14]:.2f} s (load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
    for body, (reply, _) in zip(requests, results):
        assert reply.status_code == 200, reply.text
        prompt_ids = backend.encode(backend.chat_prompt(body["messages"]))
        alone = "".join(Generation(backend, prompt_ids, 6, 1.0, 50, body["seed"]))
        assert reply.json()["choices"][0]["message"]["content"] == alone
    assert served.stats.started - before["started"] == 16
    assert served.stats.most_running == 1  # one generation at a time


def test_the_openai_client_completes_a_chat(served):
    client = OpenAI(base_url=served.url + "/v1", api_key="not-needed", max_retries=0)
    reply = client.chat.completions.create(model=SMOLLM2, messages=FRANCE, temperature=0, max_tokens=30)
    assert "Paris" in reply.choices[0].message.content
    stream = client.chat.completions.create(model=SMOLLM2, messages=FRANCE, temperature=0, max_tokens=30,
                                            stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == reply.choices[0].message.content
    with pytest.raises(Exception) as refused:
        client.chat.completions.create(model="gpt-5", messages=FRANCE)
    assert refused.value.status_code == 404


def test_listening_beyond_this_computer_needs_a_flag(capsys):
    class Parser:
        def error(self, message):
            raise SystemExit(message)

    for host in ["127.0.0.1", "localhost", "::1"]:
        assert checked_host(Parser(), SimpleNamespace(host=host, allow_remote=False)) == host
    with pytest.raises(SystemExit, match="--allow-remote"):
        checked_host(Parser(), SimpleNamespace(host="0.0.0.0", allow_remote=False))
    assert checked_host(Parser(), SimpleNamespace(host="0.0.0.0", allow_remote=True)) == "0.0.0.0"
    assert "WARNING" in capsys.readouterr().err


def test_the_chat_page_sends_the_history_and_keeps_to_the_context(tmp_path):
    """The chat page's answer function: earlier turns (Gradio's text or list-of-parts content) reach the prompt,
    a conversation longer than the context keeps its latest tokens, and the answer grows piece by piece."""
    torch.manual_seed(123)
    save_checkpoint(tmp_path / "model.pth", GPTModel(replace(TINY, context_length=32)))
    backend = gpt_backend(tmp_path / "model.pth", CH07_GPT, instruct=True)
    prompts = []
    backend.chat_prompt = lambda messages, chat_prompt=backend.chat_prompt: prompts.append(messages) or chat_prompt(
        messages)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "text", "text": "Yo"}]}]
    answers = list(build_chat_page({CH07_GPT: backend}).fn("Name a color. " * 20, history, CH07_GPT, 500, 0.0))
    assert prompts[0][:2] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    assert len(answers) > 1 and all(later.startswith(earlier) for earlier, later in zip(answers, answers[1:]))


def test_a_file_that_is_no_checkpoint_is_refused_by_name(tmp_path):
    class Parser:
        def error(self, message):
            raise SystemExit(message)

    (tmp_path / "notes.pth").write_text("not a checkpoint")
    refused = "could not load the model: (the file is not a PyTorch checkpoint|.*No such file)"
    for path in [tmp_path / "notes.pth", tmp_path / "missing.pth"]:
        with pytest.raises(SystemExit, match=refused):
            load_backends(Parser(), SimpleNamespace(no_smollm2=True, ch05=path, ch07=None))
