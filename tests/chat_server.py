"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol and plays scripted replies,
the far side of the model client in tests.

``responder(request, attempt) -> action``: ``request`` is the parsed JSON body, ``attempt`` how many times the
same messages were received before (0 for the first). An action is a dict:
- ``{"text": str}`` (optionally ``"usage": {...}``, ``"delay": seconds`` before answering);
- ``{"status": 429, "headers": {"Retry-After": "1"}, "body": "..."}`` (any status);
- ``{"drop": True}``: close the connection without a response;
- ``{"reset": True}``: abort the connection with a TCP reset;
- ``{"truncate": True, "text": str}``: send the headers and half the body, then close.
Every request is logged in ``server.log`` as (message key, action kind)."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[dict[str, Any], int], dict[str, Any]]


def last_user_text(request: dict[str, Any]) -> str:
    """The text of the last user message (content parts joined)."""
    for m in reversed(request.get("messages", [])):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return "\n".join(p.get("text", "") for p in c if p.get("type") == "text")
            return str(c)
    return ""


def first_user_text(request: dict[str, Any]) -> str:
    for m in request.get("messages", []):
        if m.get("role") == "user":
            c = m.get("content")
            return "\n".join(p.get("text", "") for p in c if p.get("type") == "text") if isinstance(c, list) else str(c)
    return ""


def completion(text: str, model: str, usage: dict[str, int] | None = None) -> bytes:
    body = {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage or {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}
    return json.dumps(body).encode("utf-8")


class ChatServer:
    def __init__(self, responder: Responder, api_key: str | None = None):
        self.responder = responder
        self.api_key = api_key
        self.seen: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []  # (messages key, action kind)
        self.auth_headers: list[str] = []
        self._lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def completed(self) -> Counter[str]:
        """Complete 200 answers per messages key."""
        return Counter(k for k, kind in self.log if kind == "text")

    def __enter__(self) -> "ChatServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                req = json.loads(self.rfile.read(n) or b"{}")
                key = json.dumps(req.get("messages"), sort_keys=True)
                with server._lock:
                    attempt = server.seen[key]
                    server.seen[key] += 1
                    server.auth_headers.append(self.headers.get("Authorization") or "")
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._send(401, b'{"error": "bad key"}', {})
                    server._note(key, "401")
                    return
                action = server.responder(req, attempt)
                if action.get("delay"):
                    time.sleep(float(action["delay"]))
                if action.get("drop"):
                    server._note(key, "drop")
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action.get("reset"):
                    server._note(key, "reset")
                    self.close_connection = True
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    return
                if "status" in action:
                    server._note(key, str(action["status"]))
                    self._send(int(action["status"]), str(action.get("body", "error")).encode(), action.get("headers", {}))
                    return
                body = completion(action["text"], req.get("model", ""), action.get("usage"))
                if action.get("truncate"):
                    server._note(key, "truncate")
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                server._note(key, "text")
                self._send(200, body, {"Content-Type": "application/json"})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients closing idle keep-alive connections is normal, not a test failure

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 256
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def _note(self, key: str, kind: str) -> None:
        with self._lock:
            self.log.append((key, kind))

    def __exit__(self, *exc: Any) -> None:
        assert self.httpd is not None
        self.httpd.shutdown()
        self.httpd.server_close()
