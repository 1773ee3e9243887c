"""A fake judge server with canned replies, for tests and for trying llm_judge.py without a model.

It listens on 127.0.0.1 only, on a free port the operating system picks, and speaks both APIs the way their
servers document them:

* Ollama's ``POST /api/chat``: an NDJSON stream (one JSON object per line, the reply in pieces in
  ``message.content``, the last object with ``"done": true``), or one such object when the request sets
  ``"stream": false``;
* the OpenAI-compatible ``POST /v1/chat/completions``: one ``chat.completion`` object, or, when the request sets
  ``"stream": true``, server-sent events ``data: {...}`` with the pieces in ``choices[0].delta.content``, ended by
  ``data: [DONE]``.

No model runs here: the reply to a prompt is ``reply(prompt)``, a function the caller passes. Four model names
make the server misbehave on purpose, as real servers sometimes do: ``missing`` answers 404 with the "model not
found" error, ``broken`` answers 500, ``garbage`` answers 200 with a body in neither API's format, and ``slow``
waits ``delay`` seconds before answering. Every request's path and JSON body is kept in ``requests``.

    with CannedJudgeServer(lambda prompt: "85") as server:
        Judge(model="any", url=server.url).chat("...")   # "85"
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATHS = {"/api/chat": "ollama", "/v1/chat/completions": "openai"}
PIECE = 4  # characters per streamed piece, so that a client must join several


class CannedJudgeServer:
    def __init__(self, reply, delay=5.0):
        self.reply, self.delay, self.requests = reply, delay, []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.canned = self
        self.server.block_on_close = False  # closing does not wait for a "slow" reply nobody reads any more
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # keep test and notebook output quiet
        pass

    def do_GET(self):
        self.send_body(200, "text/plain", "Canned judge server is running")

    def do_POST(self):
        canned = self.server.canned
        payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        canned.requests.append((self.path, payload))
        api, model = PATHS.get(self.path), payload["model"]
        if api is None:
            return self.send_body(404, "text/plain", "404 page not found")
        if model == "missing":
            message = f'model "{model}" not found, try pulling it first'
            error = {"error": message} if api == "ollama" else {"error": {"message": message, "type": "api_error"}}
            return self.send_body(404, "application/json", json.dumps(error))
        if model == "broken":
            return self.send_body(500, "application/json", json.dumps({"error": "something went wrong"}))
        if model == "garbage":
            return self.send_body(200, "text/html", "<html><body>Welcome to nginx!</body></html>")
        if model == "slow":
            time.sleep(canned.delay)
        text = canned.reply(payload["messages"][-1]["content"])
        pieces = [text[i:i + PIECE] for i in range(0, len(text), PIECE)]
        try:
            if api == "ollama":
                self.answer_ollama(model, text, pieces, payload.get("stream", True))
            else:
                self.answer_openai(model, text, pieces, payload.get("stream", False))
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            pass

    def answer_ollama(self, model, text, pieces, stream):
        def chunk(content, done):
            return {"model": model, "created_at": "2024-01-01T00:00:00Z",
                    "message": {"role": "assistant", "content": content}, "done": done,
                    **({"done_reason": "stop"} if done else {})}

        if not stream:
            return self.send_body(200, "application/json", json.dumps(chunk(text, True)))
        self.start_stream("application/x-ndjson")
        for piece in pieces:
            self.write(json.dumps(chunk(piece, False)) + "\n")
        self.write(json.dumps(chunk("", True)) + "\n")

    def answer_openai(self, model, text, pieces, stream):
        head = {"id": "chatcmpl-canned", "created": 1704067200, "model": model}
        if not stream:
            return self.send_body(200, "application/json", json.dumps({
                **head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}))

        def event(delta, finish_reason=None):
            chunk = {**head, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            return f"data: {json.dumps(chunk)}\n\n"

        self.start_stream("text/event-stream")
        self.write(event({"role": "assistant", "content": ""}))
        for piece in pieces:
            self.write(event({"content": piece}))
        self.write(event({}, "stop"))
        self.write("data: [DONE]\n\n")

    def send_body(self, status, content_type, text):
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def start_stream(self, content_type):
        """Headers of a reply whose length is not known in advance: it ends when the server closes the connection."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.end_headers()

    def write(self, text):
        self.wfile.write(text.encode("utf-8"))
        self.wfile.flush()
