"""`nbo recommend` sends the API key from --api-key or $NBO_API_KEY."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from nbo.cli import app

DECISION = {
    "decision_id": "d1",
    "customer_id": "c1",
    "model_version": "1",
    "fallback": False,
    "degraded": False,
    "offers": [{"offer_id": "o1", "score": 0.5, "expected_value": 1.0, "reason": "you like tea"}],
}


@pytest.fixture
def keys_seen():
    """A real HTTP server on a free port that answers /recommend and notes the x-api-key of each request."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            seen.append(self.headers.get("x-api-key"))
            body = json.dumps(DECISION).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()


def test_the_key_comes_from_the_option_or_the_environment(keys_seen, monkeypatch):
    url, seen = keys_seen
    monkeypatch.delenv("NBO_API_KEY", raising=False)
    runner = CliRunner()
    for args, env in [([], {}), (["--api-key", "from-option"], {}), ([], {"NBO_API_KEY": "from-env"})]:
        result = runner.invoke(app, ["recommend", "c1", "--url", url, *args], env=env)
        assert result.exit_code == 0, result.output
        assert "o1" in result.output
    assert seen == [None, "from-option", "from-env"]
