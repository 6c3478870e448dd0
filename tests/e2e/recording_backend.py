"""A stand-in ML backend that records what Label Studio sends it (standard library and numpy).

It answers ``GET /health``, ``POST /setup`` and ``POST /webhook`` as a backend must, and every
``POST /predict`` that carries a smart tool's regions with one fixed object: a brush mask and a
box over the same rectangle of the image (:data:`FIXED_BOX`, percent of the image), sized to
the ``original_width`` and ``original_height`` of the request's context (a plain ``/predict``,
sent when a task opens, gets an empty result). Each ``/predict`` body is kept in
:attr:`RecordingBackend.bodies`, so a test sees the payloads a real Label Studio sends when an
annotator draws with a smart tool; :func:`redact` replaces the credentials in them.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from zerolabel.labelstudio.brush import brush_rle_encode

MODEL_VERSION = "recorder-1"
FIXED_BOX = (20.0, 25.0, 40.0, 30.0)
"""x, y, width, height of the fixed object, in percent of the image."""
FIXED_SCORE = 0.75
PLACEHOLDER = "<redacted>"
SECRET_KEYS = ("login", "password", "access_token", "token")
MAX_BODY = 1 << 20


@dataclass
class RecordingBackend:
    """The running stand-in: its URL and the ``/predict`` bodies received, oldest first."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def interactive(self) -> list[dict[str, Any]]:
        """The ``/predict`` bodies that carried a smart tool's regions."""
        with self.lock:
            return [b for b in self.bodies if (b.get("params") or {}).get("context")]

    def clear(self) -> None:
        with self.lock:
            self.bodies.clear()


def fixed_regions(width: int, height: int, number: int = 1) -> list[dict[str, Any]]:
    """The fixed object as Label Studio regions: a box (``label``) and a mask (``mask``), with
    ids ``box-<number>`` and ``mask-<number>`` (Label Studio replaces a region on accepting a
    suggestion of the same id, so each answer needs its own)."""
    x, y, w, h = FIXED_BOX
    mask = np.zeros((height, width), dtype=bool)
    left, top = round(x / 100 * width), round(y / 100 * height)
    right, bottom = round((x + w) / 100 * width), round((y + h) / 100 * height)
    mask[top:bottom, left:right] = True
    envelope = {
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "score": FIXED_SCORE,
    }
    box = {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": ["object"]}
    brush = {"format": "rle", "rle": brush_rle_encode(mask), "brushlabels": ["object"]}
    shapes = (("box", "label", "rectanglelabels", box), ("mask", "mask", "brushlabels", brush))
    return [
        {**envelope, "id": f"{kind}-{number}", "from_name": name, "type": type_, "value": value}
        for kind, name, type_, value in shapes
    ]


def redact(body: Any) -> Any:
    """A copy of ``body`` with every credential-like value replaced by :data:`PLACEHOLDER`
    (``None`` stays ``None``: it shows the field was empty)."""
    if isinstance(body, dict):
        return {
            key: (PLACEHOLDER if key in SECRET_KEYS and value is not None else redact(value))
            for key, value in body.items()
        }
    if isinstance(body, list):
        return [redact(item) for item in body]
    return body


def _image_size(body: dict[str, Any]) -> tuple[int, int] | None:
    """The original size the context's regions give; None without a context."""
    context = (body.get("params") or {}).get("context") or {}
    for region in context.get("result") or []:
        width, height = region.get("original_width"), region.get("original_height")
        if isinstance(width, int) and isinstance(height, int) and 0 < width * height <= 1 << 26:
            return width, height
    return None


def _handler(backend: RecordingBackend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # quiet: tests read the bodies, not the log

        def _send(self, status: int, answer: dict[str, Any]) -> None:
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any] | None:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                return None
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return None
            return body if isinstance(body, dict) else None

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path.split("?")[0] == "/health":
                self._send(200, {"status": "UP", "model_class": "RecordingBackend"})
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            route = self.path.split("?")[0]
            body = self._body()
            if body is None:
                self._send(400, {"error": "the body must be a JSON object"})
            elif route == "/setup":
                self._send(200, {"model_version": MODEL_VERSION})
            elif route == "/webhook":
                self._send(200, {"status": "ok"})
            elif route == "/predict":
                with backend.lock:
                    backend.bodies.append(body)
                    number = len(backend.bodies)
                tasks = body.get("tasks") or []
                # A plain predict (a task opened) gets no regions: only clicks get the object.
                size = _image_size(body)
                regions = fixed_regions(*size, number) if size is not None else []
                results = [{"result": regions, "score": FIXED_SCORE} for _ in tasks]
                self._send(200, {"results": results, "model_version": MODEL_VERSION})
            else:
                self._send(404, {"error": f"no route {self.path}"})

    return Handler


@contextlib.contextmanager
def recording_backend() -> Iterator[RecordingBackend]:
    """The stand-in on a free 127.0.0.1 port, served from a thread until the block ends."""
    backend = RecordingBackend("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(backend))
    backend.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
