"""Score responses with a larger LLM as judge, served on your own machine: Ollama's API or the OpenAI-compatible one.

Two HTTP APIs cover the local servers people use:

* ``api="ollama"``: Ollama's own ``POST /api/chat``. Its reply is a stream of JSON objects, one per line (NDJSON),
  each carrying a piece of the message in ``message.content``; the last one has ``"done": true``.
* ``api="openai"``: the OpenAI-compatible ``POST /v1/chat/completions``, served by Ollama too, by llama.cpp's
  ``llama-server``, vLLM and LM Studio. Without streaming the reply is one JSON object (``choices[0].message``);
  with streaming it is a server-sent-event stream of ``data: {...}`` lines carrying ``choices[0].delta`` pieces,
  ended by ``data: [DONE]``.

``url`` is the server's root (``http://localhost:11434`` for Ollama, whichever API; ``http://localhost:8080`` for
``llama-server``, ``http://localhost:8000`` for vLLM, ``http://localhost:1234`` for LM Studio). Requests ask for
deterministic decoding (temperature 0 and a fixed seed), so a rerun with the same server, model and hardware gives
the same scores. Only the standard library is used (``urllib``).

A server that is not running, a model that is not downloaded, an HTTP error, a reply that does not follow the API or
no reply within ``timeout`` seconds raise ``JudgeError`` with a message that says what to do. A well-formed reply
without a usable score is not an error: ``judge_entries`` records it with the score ``None``.
"""

import http.client
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

from tqdm import tqdm

APIS = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}
DEFAULT_URL = "http://localhost:11434"  # Ollama's default address; Ollama serves both APIs there
DEFAULT_MODEL = "llama3"
START_HINT = ("Start a server first, for example Ollama (https://ollama.com): run `ollama serve` in a terminal and, "
              "once, `ollama pull {model}`; or llama.cpp's `llama-server -m MODEL.gguf --port 8080` and use "
              "api='openai' with url='http://localhost:8080' (--api openai --url http://localhost:8080).")


class JudgeError(RuntimeError):
    """The judge server could not be used: it is not running, lacks the model, failed, or did not answer in time."""


@dataclass(frozen=True)
class Judge:
    """Which judge to ask, where, and how: the model's name, the API (``ollama`` or ``openai``) and the server root."""

    model: str = DEFAULT_MODEL
    api: str = "ollama"
    url: str = DEFAULT_URL
    timeout: float = 120.0  # seconds without any data from the server; the first request also loads the model
    seed: int = 123
    stream: bool = True

    def __post_init__(self):
        if self.api not in APIS:
            raise ValueError(f"api must be one of {sorted(APIS)}, not {self.api!r}")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, like {DEFAULT_URL!r}; got {self.url!r}")

    @property
    def endpoint(self):
        return self.url.rstrip("/") + APIS[self.api]

    def payload(self, prompt):
        """The request body: one user message, decoded greedily (temperature 0) with a fixed seed."""
        messages = [{"role": "user", "content": prompt}]
        if self.api == "ollama":
            return {"model": self.model, "messages": messages, "stream": self.stream,
                    "options": {"temperature": 0, "seed": self.seed}}
        return {"model": self.model, "messages": messages, "stream": self.stream, "temperature": 0, "seed": self.seed}

    def chat(self, prompt):
        """The judge model's complete reply to ``prompt``."""
        request = urllib.request.Request(self.endpoint, data=json.dumps(self.payload(prompt)).encode("utf-8"),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                if self.api == "openai" and not self.stream:
                    return read_openai_json(response.read())
                lines = (line.decode("utf-8").strip() for line in response)
                return read_ollama_stream(lines) if self.api == "ollama" else read_openai_stream(lines)
        except urllib.error.HTTPError as e:
            raise JudgeError(self.http_problem(e.code, e.reason, server_message(e.read()))) from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise JudgeError(self.timeout_problem()) from e
            raise JudgeError(f"No judge server answers at {self.url} ({e.reason}). "
                             + START_HINT.format(model=self.model)) from e
        except TimeoutError as e:
            raise JudgeError(self.timeout_problem()) from e
        except (ValueError, KeyError, IndexError, TypeError, http.client.HTTPException) as e:  # JSON, UTF-8, HTTP
            raise JudgeError(f"The server at {self.endpoint} did not answer in the {self.api} API's format "
                             f"({type(e).__name__}: {e}). Is api={self.api!r} the API this server speaks?") from e
        except OSError as e:
            raise JudgeError(f"The connection to {self.url} broke off: {e}") from e

    def http_problem(self, code, reason, message):
        problem = f"The server at {self.endpoint} answered HTTP {code} {reason}: {message.rstrip('.')}."
        if code != 404:
            return problem
        if self.api == "ollama":
            return (f"{problem} If model {self.model!r} is not downloaded yet, run `ollama pull {self.model}` "
                    "(`ollama list` shows the models you have). If the path is unknown, the server does not speak "
                    "Ollama's API: try api='openai'.")
        return (f"{problem} If the server lacks model {self.model!r}: with Ollama, run `ollama pull {self.model}`; "
                f"llama.cpp, vLLM and LM Studio serve the model they were started with (GET {self.url.rstrip('/')}"
                "/v1/models lists its name). Check too that the URL is the server's root, without /v1.")

    def timeout_problem(self):
        return (f"The judge server at {self.url} sent nothing for {self.timeout:g} s. The first request loads the "
                "model, which can take minutes on a CPU: allow more time (timeout, --timeout) or use a smaller judge "
                "model.")


def server_message(body):
    """The error message in an error reply: Ollama's ``{"error": "..."}``, OpenAI's ``{"error": {"message": ...}}``."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        error = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return text[:200] or "(empty reply)"
    return error.get("message", str(error)) if isinstance(error, dict) else str(error)


def read_ollama_stream(lines):
    """Join the ``message.content`` pieces of Ollama's NDJSON reply up to the object with ``"done": true``."""
    pieces = []
    for line in filter(None, lines):
        chunk = json.loads(line)
        if "error" in chunk:
            raise JudgeError(f"The Ollama server reported an error while answering: {chunk['error']}")
        pieces.append(chunk["message"]["content"])
        if chunk["done"]:
            return "".join(pieces)
    raise ValueError("the stream ended without an object with \"done\": true")


def read_openai_stream(lines):
    """Join the ``choices[0].delta.content`` pieces of a server-sent-event stream up to ``data: [DONE]``."""
    pieces = []
    for line in lines:
        if not line or line.startswith(":"):  # events are separated by blank lines; ':' starts a comment
            continue
        if not line.startswith("data:"):
            raise ValueError(f"expected a 'data:' line, got {line[:80]!r}")
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            return "".join(pieces)
        chunk = json.loads(data)
        if "error" in chunk:
            raise JudgeError(f"The server reported an error while answering: {chunk['error']}")
        for choice in chunk["choices"][:1]:  # the final usage chunk some servers send has no choices
            pieces.append(choice["delta"].get("content") or "")
    raise ValueError("the stream ended without 'data: [DONE]'")


def read_openai_json(body):
    """The reply in a (non-streamed) chat completion object."""
    return json.loads(body)["choices"][0]["message"]["content"]


def server_answers(url=DEFAULT_URL, timeout=2.0):
    """Whether an HTTP server answers at ``url`` at all (any status counts); used to skip judging when none runs."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:  # urllib.error.URLError is an OSError: refused, unknown host, timeout
        return False


def judge_prompt(entry, response):
    """Ask for a 0-100 score of ``response`` to the entry's task, with the dataset's answer as the reference."""
    task = entry["instruction"] + (f"\n\nInput:\n{entry['input']}" if entry["input"] else "")
    return ("You are grading an assistant's answer to a task.\n\n"
            f"Task:\n{task}\n\n"
            f"Reference answer:\n{entry['output']}\n\n"
            f"Assistant's answer:\n{response}\n\n"
            "Score the assistant's answer on a scale from 0 to 100, where 100 means it is correct and as good as the "
            "reference answer, and 0 means it is wrong, empty or unrelated to the task. "
            "Reply with the integer score only.")


NUMBER = r"(?<![\w.-])(\d+(?:\.\d+)?)"  # not part of a word, a decimal or a negative number


def parse_score(reply):
    """The 0-100 score in a judge's reply, or None if the reply holds none (or several that disagree).

    Judges do not always reply with a bare number. In order, the first rule that applies decides:
    ``"85/100"`` or ``"85 out of 100"`` gives 85 (a score out of any other maximum, ``"8/10"``, gives None);
    ``"Score: 85"``, ``"score of 85"``, ``"score is 85"`` give 85; otherwise, a reply mentioning exactly one number
    gives that number (``"85"``, ``"I'd say 85."``). A fraction is rounded (``"72.5"`` gives 72, Python's rounding
    to even); a number above 100 gives None.
    """
    out_of = re.search(NUMBER + r"\s*(?:/|out of)\s*(\d+)", reply, re.IGNORECASE)
    if out_of:
        return as_score(out_of.group(1)) if out_of.group(2) == "100" else None
    labelled = re.search(r"\bscore\s*(?:is|of|:|=)?\s*" + NUMBER, reply, re.IGNORECASE)
    if labelled:
        return as_score(labelled.group(1))
    numbers = set(re.findall(NUMBER, reply))
    return as_score(numbers.pop()) if len(numbers) == 1 else None


def as_score(number):
    value = round(float(number))
    return value if 0 <= value <= 100 else None


def judge_entries(entries, judge, response_key="model_response"):
    """Ask ``judge`` to score every entry's response; a list of ``{"score": int or None, "reply": str}``."""
    records = []
    for entry in tqdm(entries, desc=f"judging with {judge.model}"):
        reply = judge.chat(judge_prompt(entry, entry[response_key]))
        records.append({"score": parse_score(reply), "reply": reply})
    return records
