"""The review page: ``medvl review BUILD --serve``. A small standard-library HTTP server over one build folder
and one static page (``data/index.html``, ``app.js``, ``style.css``).

Routes (GET unless noted): ``/`` the page; ``/static/<file>``; ``/api/facets``; ``/api/samples`` (filters
``dataset``, ``modality``, ``kind``, ``lang``, ``split``, ``judged=1``; ``offset``, ``limit``);
``/api/sample?n=`` (the sample, its record, boxes parsed from its text, hand grade, judge verdict);
``/api/rejects`` (filters ``source``, ``stage``); ``/api/overlay?mask=masks/...png`` (the label map coloured,
transparent where 0); ``/file/images/...`` and ``/file/masks/...``; POST ``/api/grade`` with
``{"sample_id", "grade": 1-5, "comment"}``. Files are served only from ``images/`` and ``masks/`` inside the
build (no ``..``, no absolute paths, no symlink leaving the build)."""

from __future__ import annotations

import io
import json
import mimetypes
import re
import threading
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from medvl.review.store import FACETS, REJECT_FACETS, BuildIndex, Grades

STATIC = Path(__file__).parent / "data"
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}
FILE_ROOTS = ("images", "masks")
MAX_LIMIT = 200
_BOX = re.compile(r"<box>\s*(\[.*?\])\s*</box>", re.DOTALL)
_NUM = re.compile(r"-?\d+(?:\.\d+)?")
PALETTE = [(255, 64, 64), (64, 200, 255), (255, 200, 0), (160, 90, 255), (0, 220, 120), (255, 120, 200),
           (255, 140, 0), (0, 160, 160), (200, 255, 80), (120, 120, 255)]


def confined(build: Path, rel: str) -> Path | None:
    """The file ``rel`` names inside ``build/images`` or ``build/masks``, or None when it points anywhere
    else (``..``, absolute paths, backslashes, other folders, links inside them that lead out, missing files)."""
    if not rel or "\\" in rel or "\x00" in rel or rel.startswith("/"):
        return None
    parts = rel.split("/")
    if parts[0] not in FILE_ROOTS or any(p in ("", ".", "..") for p in parts):
        return None
    top = build.resolve() / parts[0]
    try:
        path = (top / "/".join(parts[1:])).resolve(strict=True)
        top = top.resolve(strict=True)  # the build's own images/ (or masks/) may be a link to another disk
    except (OSError, RuntimeError):
        return None
    if not path.is_file() or not path.is_relative_to(top):
        return None
    return path


def text_boxes(sample: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``<box>[[x1,y1,x2,y2],...]</box>`` in the sample's turns: normalized [0, 1] coordinates (values
    above 1.5 are read as GMAI-VL's 0-1000 integers), with the turn they came from."""
    out = []
    for i, turn in enumerate(sample.get("turns") or []):
        for m in _BOX.finditer(turn.get("text", "")):
            nums = [float(x) for x in _NUM.findall(m.group(1))]
            for k in range(0, len(nums) - 3, 4):
                b = nums[k:k + 4]
                if max(b) > 1.5:
                    b = [v / 1000.0 for v in b]
                out.append({"turn": i, "box": b})
    return out


@lru_cache(maxsize=256)
def overlay_png(path: Path, mtime_ns: int) -> bytes:
    """A label-map PNG coloured per value (alpha 110), transparent where the value is 0."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., 0]
    rgba = np.zeros(arr.shape + (4,), dtype=np.uint8)
    for v in np.unique(arr):
        if v == 0:
            continue
        rgba[arr == v] = (*PALETTE[(int(v) - 1) % len(PALETTE)], 110)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


class JudgeScores:
    """The judge's verdicts from ``review/report.json`` by sample id (re-read when the file changes)."""

    def __init__(self, build: Path):
        self.path = build / "review" / "report.json"
        self._stamp: tuple[int, int] | None = None
        self._by_id: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self) -> dict[str, dict[str, Any]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        with self._lock:
            if self._stamp != (st.st_size, st.st_mtime_ns):
                try:
                    rep = json.loads(self.path.read_text(encoding="utf-8"))
                    self._by_id = {s["id"]: {k: s.get(k) for k in ("scores", "comments", "overall",
                                                                    "overall_comment", "error")}
                                   for s in rep.get("samples", []) if "id" in s}
                except (OSError, ValueError, TypeError, KeyError):
                    self._by_id = {}
                self._stamp = (st.st_size, st.st_mtime_ns)
            return self._by_id


class ReviewApp:
    """The state the handlers share: the build's index, grades and judge scores."""

    def __init__(self, build: Path, rebuild_index: bool = False):
        self.build = Path(build).resolve()
        self.index = BuildIndex(self.build, rebuild=rebuild_index)
        self.grades = Grades(self.build)
        self.judge = JudgeScores(self.build)

    def summary(self, s: dict[str, Any], grades: dict, judge: dict) -> dict[str, Any]:
        """A list row: what the sample list shows."""
        first = next((t["text"] for t in s.get("turns", []) if t.get("role") == "user"), "")
        m = s.get("meta") or {}
        j = judge.get(s["id"]) or {}
        return {"n": s["n"], "id": s["id"], "dataset": m.get("dataset"), "modality": m.get("modality"),
                "kind": s.get("kind"), "lang": s.get("lang"), "split": s.get("split"), "text": first[:160],
                "grade": (grades.get(s["id"]) or {}).get("grade"), "judge": j.get("overall")}

    def samples(self, q: dict[str, str]) -> dict[str, Any]:
        filters = {k: q[k] for k in FACETS if k in q}
        judge = self.judge.get()
        ids = sorted(judge) if q.get("judged") == "1" else None
        offset, limit = _int(q.get("offset"), 0), min(max(_int(q.get("limit"), 50), 1), MAX_LIMIT)
        total, rows = self.index.samples(filters, offset, limit, ids)
        grades = self.grades.latest()
        return {"total": total, "offset": offset, "limit": limit,
                "items": [self.summary(s, grades, judge) for s in rows]}

    def sample(self, n: int) -> dict[str, Any] | None:
        s = self.index.sample(n)
        if s is None:
            return None
        rec = self.index.record(s.get("record_id"))
        keep = ("id", "width", "height", "modality", "labels", "regions", "mask", "mask_values", "department",
                "body_region", "view", "slice", "source_file", "dataset")
        return {"sample": s, "record": {k: rec.get(k) for k in keep} if rec else None, "boxes": text_boxes(s),
                "grade": self.grades.latest().get(s["id"]), "judge": self.judge.get().get(s["id"])}

    def rejects(self, q: dict[str, str]) -> dict[str, Any]:
        filters = {k: q[k] for k in REJECT_FACETS if k in q}
        offset, limit = _int(q.get("offset"), 0), min(max(_int(q.get("limit"), 50), 1), MAX_LIMIT)
        total, rows = self.index.rejects(filters, offset, limit)
        return {"total": total, "offset": offset, "limit": limit, "items": rows}

    def grade(self, body: dict[str, Any]) -> dict[str, Any]:
        sid = body.get("sample_id")
        if not isinstance(sid, str) or not self.index.has_sample(sid):
            raise ValueError(f"unknown sample_id {sid!r}")
        return self.grades.add(sid, body.get("grade"), body.get("comment") or "", body.get("who") or "")


def _int(v: str | None, default: int) -> int:
    try:
        return max(0, int(v)) if v is not None else default
    except ValueError:
        return default


def make_handler(app: ReviewApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "medvl-review"

        def log_message(self, *args: Any) -> None:  # quiet: the CLI prints the URL once
            pass

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            route = url.path
            try:
                if route in ("/", "/index.html"):
                    return self._static("index.html")
                if route == "/favicon.ico":
                    return self._send(204, b"", "image/x-icon")
                if route.startswith("/static/"):
                    return self._static(route[len("/static/"):])
                if route == "/api/facets":
                    return self._json({**app.index.facets(), "judge": bool(app.judge.get())})
                if route == "/api/samples":
                    return self._json(app.samples(q))
                if route == "/api/sample":
                    s = app.sample(_int(q.get("n"), -1))
                    return self._json(s) if s else self._error(HTTPStatus.NOT_FOUND, "no such sample")
                if route == "/api/rejects":
                    return self._json(app.rejects(q))
                if route == "/api/overlay":
                    path = confined(app.build, q.get("mask", ""))
                    if path is None or not q.get("mask", "").startswith("masks/"):
                        return self._error(HTTPStatus.NOT_FOUND, "no such mask in this build")
                    return self._send(200, overlay_png(path, path.stat().st_mtime_ns), "image/png")
                if route.startswith("/file/"):
                    path = confined(app.build, unquote(route[len("/file/"):]))
                    if path is None:
                        return self._error(HTTPStatus.NOT_FOUND, "no such file in this build")
                    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                    return self._send(200, path.read_bytes(), ctype, cache=True)
                return self._error(HTTPStatus.NOT_FOUND, f"no route {route}")
            except (BrokenPipeError, ConnectionResetError):
                return None

        def do_POST(self) -> None:  # noqa: N802
            if urlsplit(self.path).path != "/api/grade":
                return self._error(HTTPStatus.NOT_FOUND, "no such route")
            n = _int(self.headers.get("Content-Length"), 0)
            if n > 100_000:
                return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
            try:
                body = json.loads(self.rfile.read(n) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                return self._json(app.grade(body))
            except ValueError as e:
                return self._error(HTTPStatus.BAD_REQUEST, str(e))

        def _static(self, name: str) -> None:
            if name not in STATIC_FILES:
                return self._error(HTTPStatus.NOT_FOUND, "no such page file")
            self._send(200, (STATIC / name).read_bytes(), STATIC_FILES[name])

        def _json(self, obj: Any) -> None:
            self._send(200, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json")

        def _error(self, status: HTTPStatus, msg: str) -> None:
            self._send(int(status), json.dumps({"error": msg}).encode("utf-8"), "application/json")

        def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

    return Handler


def make_server(build: Path, host: str = "127.0.0.1", port: int = 8765, rebuild_index: bool = False
                ) -> ThreadingHTTPServer:
    """The server (not yet serving; call ``serve_forever``). Port 0 picks a free port
    (``server.server_address[1]``)."""
    app = ReviewApp(build, rebuild_index)
    httpd = ThreadingHTTPServer((host, port), make_handler(app))
    httpd.daemon_threads = True
    httpd.app = app  # type: ignore[attr-defined]
    return httpd
