"""Fixtures shared by the whole suite.

``../shared`` (beside the checkout) holds real test videos and the Kinetics-400 class list. It
exists for developers and CI, not for users, so tests that need it skip with a reason.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("VIDEOGN_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Two cores are shared by everything on the machine; keep test timing predictable.
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} is absent: real test videos are only beside a dev checkout/CI")
    return SHARED_DIR


@pytest.fixture(scope="session")
def shared_videos(shared_dir: Path) -> Path:
    videos = shared_dir / "videos"
    if not (videos / "MANIFEST.md").is_file():
        pytest.skip(f"{videos} has no MANIFEST.md: the real test videos are missing")
    return videos


# Run first in a child interpreter, it makes `import decord` fail as it does on a platform
# decord has no wheel for (a `sys.meta_path` finder refuses the name): no mock of the backend.
WITHOUT_DECORD = textwrap.dedent(
    """
    import sys

    class _DecordNotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "decord":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.modules.pop("decord", None)
    sys.meta_path.insert(0, _DecordNotInstalled())
    """
)


@pytest.fixture(scope="session")
def without_decord() -> str:
    """Python source to prepend to a child's code so that decord is not installed there."""
    return WITHOUT_DECORD


@pytest.fixture
def run_on_two_ranks(tmp_path):
    """``run(target)`` starts ``target(rank, 2, init_file, queue)`` in two spawned processes
    (a real gloo pair rendezvousing through a file) and returns ``{rank: value}`` of the
    ``(rank, value)`` pairs they put on the queue; each must exit 0."""

    def run(target) -> dict:
        context = mp.get_context("spawn")
        queue = context.Queue()
        init_file = str(tmp_path / "rendezvous")
        processes = [
            context.Process(target=target, args=(rank, 2, init_file, queue)) for rank in range(2)
        ]
        for process in processes:
            process.start()
        results = dict(queue.get(timeout=120) for _ in processes)
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0
        return results

    return run


class LocalFileServer:
    """A real HTTP server on 127.0.0.1 over ``files`` (URL path -> bytes), with Range requests
    and, on demand, a transfer cut after N bytes (``cut_once[path] = N``, once per path)."""

    def __init__(self):
        import http.server
        import threading

        self.files: dict[str, bytes] = {}
        self.cut_once: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header) per GET
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet test output
                pass

            def do_HEAD(self):
                server._serve(self, body=False)

            def do_GET(self):
                server._serve(self, body=True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _serve(self, handler, body: bool) -> None:
        import re
        import socket

        path = handler.path
        if body:
            self.requests.append((path, handler.headers.get("Range")))
        data = self.files.get(path)
        if data is None:
            handler.send_error(404)
            return
        start = 0
        match = re.match(r"bytes=(\d+)-$", handler.headers.get("Range") or "")
        if match and body:
            start = int(match.group(1))
            if start >= len(data):
                handler.send_error(416)
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Length", str(len(data) - start))
        handler.end_headers()
        if not body:
            return
        cut = self.cut_once.pop(path, None)
        if cut is not None:  # send part of the body, then drop the connection
            handler.wfile.write(data[start : start + cut])
            handler.wfile.flush()
            handler.connection.shutdown(socket.SHUT_RDWR)
            handler.close_connection = True
            return
        handler.wfile.write(data[start:])

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def local_http():
    """A :class:`LocalFileServer`; tests put files in ``.files`` and read ``.url``."""
    server = LocalFileServer()
    yield server
    server.close()


@pytest.fixture
def closed_port_url() -> str:
    """An address where nothing listens (connection refused at once): "offline"."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
