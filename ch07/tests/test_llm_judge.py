"""Tests of ch07/llm_judge.py against canned_judge_server.py, a local server on 127.0.0.1 that speaks Ollama's and
the OpenAI-compatible chat API as documented (streamed and whole replies) and misbehaves on request: 404 model not
found, 500, a body in neither format, no reply in time. Also a closed port (connection refused)."""

import json
import socket
import urllib.error
import urllib.request

import pytest

from canned_judge_server import CannedJudgeServer
from llm_judge import (
    Judge,
    JudgeError,
    judge_entries,
    judge_prompt,
    parse_score,
    read_ollama_stream,
    read_openai_stream,
    server_answers,
)

REPLY = "Score: 85/100. Clear, correct, and concise (naïve ✓)."  # long enough to arrive in many pieces
ENTRY = {"instruction": "Name the author of 'Pride and Prejudice'.", "input": "", "output": "Jane Austen."}


def canned_reply(prompt):
    """The canned 'judgement': depends on the answer in the prompt, so tests can tell replies apart."""
    answer = prompt.split("Assistant's answer:\n")[-1].split("\n\n")[0]
    return {"Jane Austen": "90", "Charles Dickens": "Score: 5", "(no idea)": "I cannot grade this."}.get(answer, REPLY)


@pytest.fixture(scope="module")
def server():
    with CannedJudgeServer(canned_reply, delay=3.0) as running:
        yield running


def closed_port_url():
    """The address of a port nothing listens on (bound, then released): connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("api", ["ollama", "openai"])
@pytest.mark.parametrize("stream", [True, False])
def test_chat_joins_the_whole_reply_and_asks_for_deterministic_decoding(server, api, stream):
    judge = Judge(model="judge-model", api=api, url=server.url + "/", stream=stream, seed=7)
    assert judge.chat("Please grade") == REPLY
    path, payload = server.requests[-1]
    assert path == {"ollama": "/api/chat", "openai": "/v1/chat/completions"}[api]
    assert payload["model"] == "judge-model" and payload["stream"] is stream
    assert payload["messages"] == [{"role": "user", "content": "Please grade"}]
    options = payload["options"] if api == "ollama" else payload  # Ollama takes sampling settings in "options"
    assert options["temperature"] == 0 and options["seed"] == 7


@pytest.mark.parametrize("model, api, timeout, expected", [
    ("missing", "ollama", 5, ["HTTP 404", 'model "missing" not found', "ollama pull missing"]),
    ("missing", "openai", 5, ["HTTP 404", 'model "missing" not found', "ollama pull missing", "/v1/models"]),
    ("broken", "ollama", 5, ["HTTP 500", "something went wrong"]),
    ("broken", "openai", 5, ["HTTP 500", "something went wrong"]),
    ("garbage", "ollama", 5, ["did not answer in the ollama API's format", "JSONDecodeError"]),
    ("garbage", "openai", 5, ["did not answer in the openai API's format", "'data:' line"]),
    ("slow", "ollama", 0.3, ["sent nothing for 0.3 s", "--timeout"]),
    ("slow", "openai", 0.3, ["sent nothing for 0.3 s", "--timeout"]),
])
def test_server_problems_give_errors_that_say_what_to_do(server, model, api, timeout, expected):
    with pytest.raises(JudgeError) as error:
        Judge(model=model, api=api, url=server.url, timeout=timeout).chat("Please grade")
    for text in expected:
        assert text in str(error.value)


def test_connect_timeout_is_a_timeout(monkeypatch):
    """A host that never answers the connection attempt (urllib wraps that timeout in a URLError)."""
    def never_connects(request, timeout):
        raise urllib.error.URLError(TimeoutError("timed out"))

    monkeypatch.setattr(urllib.request, "urlopen", never_connects)
    with pytest.raises(JudgeError, match="sent nothing for 2 s"):
        Judge(url="http://192.0.2.1:11434", timeout=2).chat("Please grade")


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_no_server_running_says_how_to_start_one(api):
    url = closed_port_url()
    with pytest.raises(JudgeError, match=r"No judge server answers at .*refused.*`ollama serve`.*`ollama pull llama3`"):
        Judge(api=api, url=url).chat("Please grade")
    assert not server_answers(url)


def test_server_answers_any_http_server(server):
    assert server_answers(server.url)
    assert server_answers(server.url + "/no/such/page")  # a 404 still means a server is there


def test_unknown_path_suggests_the_other_api(server):
    with pytest.raises(JudgeError, match="HTTP 404.*try api='openai'"):
        Judge(url=server.url + "/llama-cpp-root").chat("Please grade")


def test_streams_that_break_the_protocol():
    done = json.dumps({"message": {"role": "assistant", "content": ""}, "done": True})
    piece = json.dumps({"message": {"role": "assistant", "content": "8"}, "done": False})
    assert read_ollama_stream([piece, "", piece.replace('"8"', '"5"'), done]) == "85"
    with pytest.raises(ValueError, match="without an object with \"done\": true"):
        read_ollama_stream([piece])  # cut off: no partial reply is taken for a whole one
    with pytest.raises(JudgeError, match="error while answering: out of memory"):
        read_ollama_stream([piece, json.dumps({"error": "out of memory"})])
    chunk = "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "72"}}]})
    usage = "data: " + json.dumps({"choices": [], "usage": {"total_tokens": 9}})
    assert read_openai_stream([": keep-alive", chunk, "", usage, "data: [DONE]"]) == "72"
    with pytest.raises(ValueError, match="without 'data: \\[DONE\\]'"):
        read_openai_stream([chunk])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="api must be one of"):
        Judge(api="anthropic")
    with pytest.raises(ValueError, match="url must start with http"):
        Judge(url="localhost:11434")


@pytest.mark.parametrize("reply, score", [
    ("85", 85), (" 85.\n", 85), ("100", 100), ("0", 0),
    ("Score: 85", 85), ("**Score:** 90", 90), ("The score is 40 because the answer is incomplete.", 40),
    ("I would rate this 85/100.", 85), ("85 out of 100", 85), ("Score: 70 / 100 (3 mistakes)", 70),
    ("The list has 3 animals, as asked; score: 60", 60), ("72.5", 72), ("Rating: 95", 95), ("GPT4 would say 90", 90),
    ("8/10", None), ("Score: 7 out of 10", None), ("101", None), ("-5", None), ("", None),
    ("I cannot grade this.", None), ("Somewhere between 70 and 80.", None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_judge_prompt_holds_task_input_reference_and_answer():
    prompt = judge_prompt({**ENTRY, "input": "Chapter 1"}, "Jane Austen")
    for part in ["Name the author of 'Pride and Prejudice'.", "Input:\nChapter 1", "Reference answer:\nJane Austen.",
                 "Assistant's answer:\nJane Austen", "0 to 100", "integer score only"]:
        assert part in prompt
    assert "Input:" not in judge_prompt(ENTRY, "Jane Austen")  # no empty input section


def test_judge_entries_records_unparseable_replies(server):
    entries = [{**ENTRY, "response": answer} for answer in ["Jane Austen", "Charles Dickens", "(no idea)"]]
    records = judge_entries(entries, Judge(model="judge-model", url=server.url), response_key="response")
    assert records == [{"score": 90, "reply": "90"}, {"score": 5, "reply": "Score: 5"},
                       {"score": None, "reply": "I cannot grade this."}]
