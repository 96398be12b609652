"""Test stand-in for ``vllm serve`` — vLLM needs a GPU, so the VLLMEngine's process management is tested on this.

It is *not* vLLM: it accepts the same command line (``serve MODEL --host H --port P --served-model-name N ...``),
records it, and answers the routes the engine uses (``/health``, ``/v1/models``, ``/tokenize``, streaming
``/v1/chat/completions`` and ``/v1/completions``) by echoing the words of the prompt, one chunk per word.
Environment knobs: ``STANDIN_ARGV_FILE`` (write argv as JSON), ``STANDIN_FAIL`` (exit 3 at start with a message),
``STANDIN_NEVER_READY`` (never answer ``/health``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _words(body: dict[str, Any]) -> list[str]:
    if "messages" in body:
        text = " ".join(str(m.get("content", "")) for m in body["messages"])
    else:
        text = str(body.get("prompt", ""))
    return text.split()


def make_handler(served_name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            return

        def _json(self, status: int, obj: Any) -> None:
            raw = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path == "/health":
                if os.environ.get("STANDIN_NEVER_READY"):
                    self._json(503, {"error": "warming up"})
                else:
                    self._json(200, {})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": served_name, "object": "model"}]})
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
            if body.get("model") != served_name:
                self._json(404, {"error": {"message": f"model {body.get('model')!r} does not exist"}})
                return
            if self.path == "/tokenize":
                self._json(200, {"count": len(_words(body)) + 3, "tokens": []})
                return
            chat = self.path == "/v1/chat/completions"
            if not chat and self.path != "/v1/completions":
                self._json(404, {"error": "not found"})
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            words = _words(body)[: int(body.get("max_tokens", 16))]
            obj = "chat.completion.chunk" if chat else "text_completion"
            for i, word in enumerate(words):
                last = i == len(words) - 1
                choice: dict[str, Any] = {"index": 0, "finish_reason": "length" if last else None, "logprobs": None}
                choice.update({"delta": {"content": word + " "}} if chat else {"text": word + " "})
                chunk = {"id": "standin-1", "object": obj, "created": int(time.time()), "model": served_name,
                         "choices": [choice]}  # fmt: skip
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")

    return Handler


def main(argv: list[str]) -> None:
    if os.environ.get("STANDIN_ARGV_FILE"):
        with open(os.environ["STANDIN_ARGV_FILE"], "w") as fh:
            json.dump(argv, fh)
    if os.environ.get("STANDIN_FAIL"):
        print("stand-in: CUDA error: no kernel image is available for execution on the device", file=sys.stderr)
        sys.exit(3)
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", required=True)
    args, _rest = parser.parse_known_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args.served_model_name))
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
