"""A webhook receiver on loopback (stdlib ``http.server``): records what is POSTed.

Answers each POST with the next status of ``statuses`` (then 204), optionally
after hanging ``hang_s``; a 2xx answer's JSON body is kept in ``bodies``, every
arrival's time in ``times``. Served from a thread by :meth:`Receiver.serving`,
which stops it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, statuses: list[int] | None = None, hang_s: float = 0.0) -> None:
        self.statuses = list(statuses or [])
        self.hang_s = hang_s
        self.bodies: list[Any] = []
        self.times: list[float] = []
        #: POSTs answered with a failure status.
        self.refused = 0
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                me.times.append(time.monotonic())
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if me.hang_s:
                    time.sleep(me.hang_s)
                status = me.statuses.pop(0) if me.statuses else 204
                if status < 300:
                    me.bodies.append(json.loads(body))
                else:
                    me.refused += 1
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @contextlib.contextmanager
    def serving(self) -> Iterator[Receiver]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join()
