"""Model adapters: the hf adapter on a tiny random LLaVA (batch-size invariance, templates, offline errors),
the openai adapter against a real local HTTP server (request shape, retries, errors), the predictions file
adapter and the medvl scheme."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from eval_fixtures import image_bytes
from medvl.eval.adapters._base import AdapterError, load_adapter, parse_model_spec
from medvl.eval.adapters._images import ImageLoadError, load_pil, to_data_url
from medvl.eval.types import Request
from tiny_vlm import build_tiny_llava

IMAGES = ["ct_chest", "mr_head", "xray_chest", "us", "fundus", "pathology", "mr_brain", "ct_liver"]
QUESTIONS = [
    "is there a nodule in the left lung?", "which organ is abnormal in this image?",
    "is this a coronal or sagittal slice?", "what modality is this?", "the lesion is located where?",
    "is the liver normal on this ct scan?", "answer with the option letter", "does the mri show the brain?",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


def _requests(n: int = 11) -> list[Request]:
    reqs = []
    for i in range(n):
        imgs = [image_bytes(IMAGES[i % len(IMAGES)], "PNG" if i % 2 else "JPEG")]
        if i == 4:
            imgs.append(image_bytes("microscopy", "PNG"))  # two images in one request
        reqs.append(Request(id=str(i), prompt=QUESTIONS[i % len(QUESTIONS)] + " " * (i % 3), images=imgs,
                            max_new_tokens=6 + 3 * (i % 3)))
    return reqs


def test_hf_outputs_identical_for_any_batch_size(tiny_model):
    reqs = _requests()
    outs = {bs: load_adapter(f"hf:{tiny_model}", batch_size=bs).generate(reqs) for bs in (1, 3, 8)}
    assert outs[1] == outs[3] == outs[8]
    assert all(isinstance(o, str) and o for o in outs[1])
    assert len(set(outs[1])) > 1  # answers depend on the input
    # a shorter token budget gives a prefix of the longer answer (greedy decoding)
    short = [Request(r.id, r.prompt, r.images, max_new_tokens=3) for r in reqs[:3]]
    adapter = load_adapter(f"hf:{tiny_model}", batch_size=8)
    for s, full in zip(adapter.generate(short), outs[1][:3]):
        assert full.startswith(s)


def test_hf_prompt_uses_chat_template_or_fallback(tiny_model, tmp_path):
    adapter = load_adapter(f"hf:{tiny_model}")
    text = adapter.build_text(Request("x", "what is shown? <image>", [b"a", b"b"]))
    assert text.count("<image>") == 2 and text.startswith("USER: <image>\n<image>\n") and text.endswith("ASSISTANT:")
    plain = build_tiny_llava(tmp_path / "plain", chat_template=False)
    ad2 = load_adapter(f"hf:{plain}", batch_size=2)
    assert not ad2.has_template
    assert ad2.build_text(Request("x", "what is shown?", [b"a"])) == "USER: <image>\nwhat is shown? ASSISTANT:"
    out = ad2.generate(_requests(3))
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert ad2.describe()["decoding"] == "greedy"


def test_hf_refuses_hub_ids_and_bad_folders(tmp_path):
    with pytest.raises(AdapterError, match="offline"):
        load_adapter("hf:llava-hf/llava-1.5-7b-hf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="config.json"):
        load_adapter(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(AdapterError, match="unknown hf adapter option"):
        load_adapter(f"hf:{tmp_path}", temperature=1)
    with pytest.raises(AdapterError, match="unknown model scheme"):
        parse_model_spec("ollama:x")
    with pytest.raises(AdapterError, match="no scheme"):
        parse_model_spec("/models/x")


def test_hf_without_torch_is_a_one_line_error(tiny_model, monkeypatch):
    """The data engine installs without the torch extra; asking for an hf: model there must say what to
    install, not raise ModuleNotFoundError from deep inside."""
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(AdapterError, match=r"needs torch and transformers \(torch is not installed\).*medvl\[torch\]"):
        load_adapter(f"hf:{tiny_model}")


def test_medvl_scheme_delegates_or_explains(tiny_model, tmp_path):
    ad = load_adapter(f"medvl:{tiny_model}", batch_size=2)
    assert ad.describe()["adapter"] == "hf"
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "notes.txt").write_text("x")
    with pytest.raises(AdapterError, match="medvl train"):
        load_adapter(f"medvl:{tmp_path / 'ckpt'}")


def test_images_helpers(tmp_path):
    bmp = tmp_path / "ct.bmp"
    Image.open(io.BytesIO(image_bytes("ct_chest", "PNG"))).save(bmp)
    url = to_data_url(str(bmp))
    assert url.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (128, 128)
    assert to_data_url(image_bytes("us")).startswith("data:image/jpeg;base64,")
    assert load_pil(image_bytes("mr_head", "PNG")).mode == "RGB"
    with pytest.raises(ImageLoadError, match="not found"):
        load_pil(str(tmp_path / "nope.png"))
    with pytest.raises(ImageLoadError, match="cannot decode"):
        load_pil(b"not an image")


# ------------------------------------------------------------------------------------------ openai

class ChatServer:
    """A real OpenAI-compatible server on 127.0.0.1 that validates requests and can fail on purpose."""

    def __init__(self, fail_first: list[int] | None = None, reply=None, require_key: str | None = None):
        self.fail = list(fail_first or [])
        self.bodies: list[dict] = []
        self.errors: list[str] = []
        self.calls = 0
        self.reply = reply or (lambda body: "The answer is B")
        self.require_key = require_key
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.calls += 1
                    code = server.fail.pop(0) if server.fail else 200
                if server.require_key and self.headers.get("Authorization") != f"Bearer {server.require_key}":
                    code = 401
                problem = server.validate(self.path, body)
                if problem:
                    server.errors.append(problem)
                    code = 400
                if code != 200:
                    self.send_response(code)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "try again"}}')
                    return
                server.bodies.append(body)
                out = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                      "content": server.reply(body)}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def validate(path: str, body: dict) -> str | None:
        if path != "/v1/chat/completions":
            return f"bad path {path}"
        if body.get("temperature") != 0 or not isinstance(body.get("max_tokens"), int):
            return "temperature must be 0 and max_tokens an int"
        msgs = body.get("messages")
        if not (isinstance(msgs, list) and len(msgs) == 1 and msgs[0]["role"] == "user"):
            return "one user message expected"
        content = msgs[0]["content"]
        if isinstance(content, str):
            return None
        for part in content:
            if part["type"] == "image_url":
                head, data = part["image_url"]["url"].split(",", 1)
                if not head.startswith("data:image/") or not head.endswith(";base64"):
                    return f"bad data url {head}"
                Image.open(io.BytesIO(base64.b64decode(data))).verify()
            elif part["type"] != "text" or not part["text"]:
                return f"bad part {part}"
        return None

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _prompt_of(body: dict) -> str:
    content = body["messages"][0]["content"]
    return content if isinstance(content, str) else [p["text"] for p in content if p["type"] == "text"][0]


def test_openai_adapter_shapes_retries_and_order():
    with ChatServer(fail_first=[429, 500], reply=lambda b: "echo: " + _prompt_of(b)) as srv:
        ad = load_adapter(f"openai:tiny-med@{srv.url}", batch_size=4, concurrency=3, backoff=0.01)
        reqs = _requests(6)
        out = ad.generate(reqs)
        assert srv.errors == []
        assert out == ["echo: " + r.prompt for r in reqs]  # order kept despite concurrency
        assert srv.calls == 8  # 6 answers + 2 retried failures
        assert all(b["model"] == "tiny-med" for b in srv.bodies)
        n_images = sorted(sum(p["type"] == "image_url" for p in b["messages"][0]["content"]) for b in srv.bodies)
        assert n_images == [1, 1, 1, 1, 1, 2]


def test_openai_adapter_errors_are_clear(monkeypatch):
    with ChatServer(fail_first=[503] * 10) as srv:
        ad = load_adapter(f"openai:m@{srv.url}", max_retries=2, backoff=0.01)
        with pytest.raises(AdapterError, match="after 3 attempts.*HTTP 503"):
            ad.generate(_requests(1))
        assert srv.calls == 3
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ChatServer(require_key="sekret") as srv:
        with pytest.raises(AdapterError, match="OPENAI_API_KEY"):
            load_adapter(f"openai:m@{srv.url}", backoff=0.01).generate(_requests(1))
        monkeypatch.setenv("OPENAI_API_KEY", "sekret")
        assert load_adapter(f"openai:m@{srv.url}").generate(_requests(1)) == ["The answer is B"]
        assert "sekret" not in json.dumps(load_adapter(f"openai:m@{srv.url}").describe())
    with pytest.raises(AdapterError, match="NAME@http"):
        load_adapter("openai:m@ftp://x")
    with pytest.raises(AdapterError, match="unknown openai adapter option"):
        load_adapter("openai:m@http://127.0.0.1:9/v1", colour="red")


# ------------------------------------------------------------------------------------------ predictions

def test_predictions_adapter(tmp_path):
    p = tmp_path / "preds.jsonl"
    p.write_text('{"id": 1, "response": "A"}\n\n{"id": "q2", "response": "no"}\n', encoding="utf-8")
    ad = load_adapter(f"predictions:{p}")
    reqs = [Request("1", "", []), Request("q3", "", []), Request("q2", "", [])]
    assert ad.generate(reqs) == ["A", None, "no"]
    assert ad.unknown_ids({"1"}) == ["q2"]
    p.write_text('{"id": 1, "response": "A"}\n{"id": 2, "response": "B"}\n{"id": "1", "response": "C"}\n')
    with pytest.raises(AdapterError, match=r"preds.jsonl:3: duplicate id '1' \(first seen on line 1\)"):
        load_adapter(f"predictions:{p}")
    p.write_text('{"id": 1, "response": "A"}\n{"id": 2, "resp')
    with pytest.raises(AdapterError, match="preds.jsonl:2: not valid JSON"):
        load_adapter(f"predictions:{p}")
    p.write_text('{"id": 1, "answer": "A"}\n')
    with pytest.raises(AdapterError, match="'id' and 'response'"):
        load_adapter(f"predictions:{p}")
    with pytest.raises(AdapterError, match="not found"):
        load_adapter(f"predictions:{tmp_path / 'none.jsonl'}")
