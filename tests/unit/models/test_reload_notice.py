"""After a promotion, every configured API is asked to reload; a failure never raises."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rps.models.stages import notify_reload, reload_urls
from rps.settings import Settings


@pytest.fixture
def api() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A loopback HTTP server recording (path, Authorization) of every POST."""
    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_each_api_gets_an_authenticated_reload_and_failures_are_reported(
    api: tuple[str, list[tuple[str, str | None]]], tmp_path: Path
) -> None:
    url, seen = api
    dead = f"http://127.0.0.1:{closed_port()}"
    settings = Settings(
        state_dir=tmp_path, api_token="s3cret-token", api_reload_urls=f" {url}/ , {dead},"
    )
    assert reload_urls(settings) == [url, dead]
    outcome = notify_reload(settings)
    assert outcome[f"{url}/model/reload"] == "ok"
    assert outcome[f"{dead}/model/reload"].startswith("error:")
    assert seen == [("/model/reload", "Bearer s3cret-token")]


def test_no_urls_no_calls(tmp_path: Path) -> None:
    assert notify_reload(Settings(state_dir=tmp_path)) == {}
