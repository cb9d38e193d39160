"""`status` says which URL it read: the default port may be another agent's."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
#: The golden /api/state of tests/unit/test_status.py, as the agent serves it.
STATE = json.dumps(
    json.loads((ROOT / "tests" / "cases" / "api-state" / "expected.json").read_bytes())["full"]
).encode()


@pytest.fixture
def agent_page() -> Iterator[str]:
    """A loopback HTTP server answering /api/state with a real agent's document."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(STATE)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_status_names_the_url_it_read(agent_page: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", agent_page]) == 1  # the document says "degraded"
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("read from ")]
    assert line.startswith(f"read from {agent_page}api/state?history=1 (--url) at ")


def test_status_json_keeps_stdout_a_document(
    agent_page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["status", "--url", agent_page, "--json"])
    captured = capsys.readouterr()
    assert json.loads(captured.out)["agent"]["site"]
    assert f"read {agent_page}api/state?history=1 (--url)" in captured.err
