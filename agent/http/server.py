"""A small asyncio HTTP/1.1 server for the gateway: five GET routes and one SSE stream.

Why not a web framework: the gateway serves one static page, one JSON
document, pages of its history, one event stream and the Prometheus text, to a
handful of viewers,
inside the agent's own event loop. A framework (and its ASGI server) would be
the largest dependency of the agent for ~300 lines of plain asyncio, and
would add its own loop, threads or workers to a process whose timing matters.

What "written carefully" means here:

* Limits: the request head must arrive within ``HEAD_TIMEOUT_S`` (3 s) and
  fit in ``MAX_HEAD`` bytes (at most ``MAX_HEADERS`` lines); a body is refused
  (GET and HEAD only); a viewer that stops reading is dropped after
  ``WRITE_TIMEOUT_S`` instead of growing a buffer.
* Connections a host without the password can hold are kept apart from the
  ones that authenticated (:mod:`agent.http.limits`): a few per client address
  while the head is read, dropped oldest-first when a flood needs room, and
  never counted against the ``MAX_CLIENTS`` admitted connections and
  ``MAX_STREAMS`` event streams, which only a complete, authenticated request
  reaches. Without a password every complete request is admitted, limited
  per client address instead.
* One request per connection (``Connection: close``), except the event stream,
  which lasts until the viewer leaves or the agent stops.
* Basic auth (when ``http.password_file`` is set) on every route, compared in
  constant time; the Authorization header and the password are never logged.
* The state document is built once per tick from the agent's status snapshot
  and shared by every viewer (see :class:`agent.http.state.StateView`); viewers
  never trigger Modbus traffic.

The server knows the agent only as a function that returns its status
(:class:`agent.status.AgentStatus`): ``agent.cli.serving`` creates both and runs
them side by side.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent import i18n
from agent.config.models import Http
from agent.config.secrets import read_secret
from agent.http import history as history_api
from agent.http import trend as trend_api
from agent.http import wire
from agent.http.limits import Gate, GateCollector, Limits, Slot, address_key
from agent.http.metrics import CONTENT_TYPE as METRICS_TYPE
from agent.http.metrics import AgentMetrics
from agent.http.state import StateView, StatusFn
from agent.http.wire import COMMON_HEADERS, MAX_HEAD, WRITE_TIMEOUT_S, HttpError
from confdoc.errors import FileRefused

log = logging.getLogger(__name__)

#: Connections accepted per turn of the event loop: under a flood, a smaller batch lets
#: the Modbus polls in the same loop run between batches.
ACCEPT_BATCH = 16
#: Connections the kernel holds until they are accepted: when full, a viewer's SYN is
#: dropped and retried a second later. Larger than a flood's connections in flight.
ACCEPT_QUEUE = 1024
TICK_S = 1.0
#: What EventSource waits before reconnecting after the stream drops (ms).
RETRY_MS = 2000

_PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


ROUTES = frozenset(
    {"/", "/index.html", "/api/state", "/api/history", "/api/trend", "/events", "/metrics"}
)
_ALLOW = (("Allow", "GET, HEAD"),)
_CHALLENGE = (("WWW-Authenticate", 'Basic realm="energy-agent", charset="UTF-8"'),)


def refusal(
    method: str, path: str, headers: dict[str, str], auth: BasicAuth | None
) -> HttpError | None:
    """Why a complete request is refused before it is admitted, if it is."""
    if path not in ROUTES:
        return HttpError(404, "not found")
    if method not in ("GET", "HEAD"):
        return HttpError(405, "only GET and HEAD", _ALLOW)
    if headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers:
        return HttpError(413, "no request body on GET")
    if auth is not None and not auth.check(headers.get("authorization")):
        return HttpError(401, "authentication required", _CHALLENGE)
    return None


def page_html() -> bytes:
    """The live page: one self-contained file shipped in this package, with the words of
    every shipped language (agent/i18n/*/page.json) put in, so it needs no other request."""
    words = {lang: i18n.catalog(lang, "page") for lang in i18n.LANGUAGES}
    blob = json.dumps(words, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    text = (resources.files("agent.http") / "page.html").read_text("utf-8")
    return text.replace("__WORDS__", blob, 1).encode()


def page_in(page: bytes, accept_language: str | None) -> bytes:
    """The page in the language the browser prefers (its ``lang``, which the page
    starts in unless the viewer chose one with its switch)."""
    lang = i18n.from_accept_language(accept_language)
    if lang == i18n.DEFAULT:
        return page
    return page.replace(b'<html lang="en">', f'<html lang="{lang}">'.encode(), 1)


def read_password(path: Path) -> str:
    """The project's secret-file rule (agent.config.secrets); OSError never shows the content."""
    try:
        return read_secret(path)
    except FileRefused as exc:
        raise OSError(f"http.password_file: cannot read {path}: {exc.reason}") from None


class BasicAuth:
    """HTTP basic auth against one user, compared in constant time.

    Both sides are hashed first (SHA-256), so the comparison takes the same time
    whatever the lengths, and the password is kept only as a digest.
    """

    def __init__(self, username: str, password: str) -> None:
        self._digest = hashlib.sha256(f"{username}:{password}".encode()).digest()

    def check(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(hashlib.sha256(raw).digest(), self._digest)


def page_url(host: str, port: int) -> str:
    """Where a person on this machine opens the page (a wildcard listener: loopback)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


class JsonApi:
    """The JSON routes: the state document, a page of the history, the trends.

    Apart from the server so that what a route answers reads on its own, and the
    server class only speaks HTTP: admission, streams, the listener.
    """

    PATHS = frozenset({"/api/state", "/api/history", "/api/trend"})

    def __init__(self, view: StateView, history: Path | None, clock: Callable[[], float]) -> None:
        self.view = view
        #: The history's file for /api/history and /api/trend (None: no records).
        self.history = history
        self.clock = clock
        self._trends = trend_api.Trends(history, clock)

    async def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if path == "/api/state":
            history = query.get("history", ["0"])[-1] not in ("0", "", "false", "no")
            return 200, self.view.with_history() if history else self.view.current()
        if path == "/api/history":
            return await self._history(query)
        return await self._trend(query)

    async def _history(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """One page of the history, read in a worker thread (see agent.http.history)."""
        if self.history is None:
            return 200, {"records": [], "next": None}
        try:
            return 200, await asyncio.to_thread(history_api.answer, self.history, query)
        except history_api.BadQuery as exc:
            return 400, {"error": str(exc)}
        except history_api.HistoryError as exc:
            return 503, {"error": f"the history cannot be read now: {exc.reason}"}

    async def _trend(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """The page's 24 h or 30 days (see agent.http.trend), for the configured devices."""
        span = (query.get("span") or ["24h"])[-1]
        return await self._trends.answer(span, self.view.status(), int(self.clock() * 1000))


class HttpServer:
    """The gateway's page, /api/state, /api/history, /events and /metrics for one agent.

    ``async with HttpServer(...)`` listens and ticks (state once a second, sent to
    every event stream); leaving it closes the listener and every stream.
    """

    def __init__(
        self,
        settings: Http,
        view: StateView,
        metrics: AgentMetrics | None = None,
        *,
        auth: BasicAuth | None = None,
        tick_s: float = TICK_S,
        clock: Callable[[], float] = time.time,
        limits: Limits | None = None,
        history: Path | None = None,
    ) -> None:
        self.settings = settings
        self.api = JsonApi(view, history, clock)
        self.view = view
        self.metrics = metrics
        self.auth = auth
        self.tick_s = tick_s
        self.clock = clock
        self._page = page_html()
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tick = asyncio.Event()
        self._frame = b""
        self._clients: set[asyncio.Task[None]] = set()
        self.limits = limits or Limits()
        self.gate = Gate(self.limits, per_address_admitted=auth is None)
        self._gauges = GateCollector(self.gate)
        self._closing = False
        self.port = settings.port

    @classmethod
    def for_status(
        cls,
        settings: Http,
        status: StatusFn,
        metrics: AgentMetrics | None = None,
        *,
        tick_s: float = TICK_S,
        limits: Limits | None = None,
        history: Path | None = None,
    ) -> HttpServer:
        """The page of the agent whose snapshot ``status(now_ms)`` returns (and whose
        history of records ``/api/history`` reads).

        ``metrics`` (the agent's registry) then reads its levels from the same
        snapshot as the page; the password is the one read with the config.
        """
        auth = None
        password = settings.secret("password_file")  # read with the config, not on this loop
        if password is not None:
            auth = BasicAuth(settings.username, password)
        view = StateView(status)
        if metrics is not None:
            metrics.watch(view.status)
        return cls(
            settings, view, metrics, auth=auth, tick_s=tick_s, limits=limits, history=history
        )

    @property
    def url(self) -> str:
        return page_url(self.settings.host, self.port)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        for warning in self.settings.warnings():
            log.warning("%s", warning)
        self.view.refresh()
        self._frame = wire.event_frame(self.view.current())
        self._server = await asyncio.start_server(
            self._accept,
            self.settings.host,
            self.settings.port,
            limit=MAX_HEAD,
            reuse_address=True,
            backlog=ACCEPT_BATCH,  # asyncio uses it for both; the queue is set below
        )
        for listener in self._server.sockets:
            with socket.fromfd(listener.fileno(), listener.family, listener.type) as dup:
                dup.listen(ACCEPT_QUEUE)  # the same socket: a dup shares its queue
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        if self.metrics is not None:
            self.metrics.registry.register(self._gauges)
        self._ticker = asyncio.create_task(self._tick_loop(), name="http-tick")
        log.info("live page on %s%s", self.url, " (basic auth)" if self.auth is not None else "")

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self._tick.set()  # wakes every stream: they see _closing and end
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            if self.metrics is not None:
                self.metrics.registry.unregister(self._gauges)
        self._server = None

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set: the form the agent's TaskGroup runs.

        A port that cannot be bound is logged and the agent goes on without its
        page: metering and publishing matter more than the view of them.
        """
        try:
            await self.start()
        except OSError as exc:
            log.error("the live page cannot listen on %s: %s", self.settings.listen, exc)
            await self.close()
            return
        try:
            await stop.wait()
        finally:
            await self.close()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s - (self.clock() % self.tick_s))
            try:
                doc = self.view.refresh()
            except Exception:  # a bug in the view must not stop the page
                log.exception("building the live state failed")
                continue
            self._frame = wire.event_frame(doc)
            tick, self._tick = self._tick, asyncio.Event()
            tick.set()

    # --- connections ----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            writer.transport.abort()
            return
        slot = self.gate.arrive(address_key(writer.get_extra_info("peername")), task.cancel)
        self._clients.add(task)
        try:
            await self._handle(slot, reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the viewer went away or stalled: nothing to answer
        except asyncio.CancelledError:
            pass  # the server is closing, or a flood needed this pending slot
        except Exception:
            log.exception("HTTP request failed")
            await wire.refuse_quietly(writer, 500, b"internal error\n")
        finally:
            self.gate.leave(slot)
            self._clients.discard(task)
            await wire.close(writer)

    async def _handle(
        self, slot: Slot, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            method, target, _version, headers = await wire.read_head(
                reader, self.limits.head_timeout_s
            )
        except HttpError as exc:
            await wire.refuse_with(writer, exc)
            return
        except asyncio.IncompleteReadError:
            return  # connection closed before a full request: nothing to answer
        head_only = method == "HEAD"
        url = urlsplit(target)
        path = url.path
        refused = refusal(method, path, headers, self.auth)
        if refused is None and (reason := self.gate.admit(slot)) is not None:
            refused = HttpError(503, reason)
        if refused is not None:
            await wire.refuse_with(writer, refused, head_only=head_only)
            return
        if path in ("/", "/index.html"):
            await wire.respond(
                writer,
                200,
                page_in(self._page, headers.get("accept-language")),
                "text/html; charset=utf-8",
                extra=(("Content-Security-Policy", _PAGE_CSP), ("Vary", "Accept-Language")),
                head_only=head_only,
            )
        elif path in JsonApi.PATHS:
            status, doc = await self.api.answer(path, parse_qs(url.query))
            body = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
            await wire.respond(
                writer, status, body, "application/json; charset=utf-8", head_only=head_only
            )
        elif path == "/metrics":
            body = self.metrics.exposition() if self.metrics is not None else b""
            await wire.respond(writer, 200, body, METRICS_TYPE, head_only=head_only)
        else:
            await self._stream(slot, writer, head_only=head_only)

    async def _stream(self, slot: Slot, writer: asyncio.StreamWriter, *, head_only: bool) -> None:
        """Server-sent events: the state document as ``event: state`` once per tick."""
        if not head_only and (reason := self.gate.open_stream(slot)) is not None:
            await wire.refuse(writer, 503, f"{reason}\n".encode())
            return
        head = (
            "HTTP/1.1 200 OK\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in COMMON_HEADERS)
            + "Content-Type: text/event-stream; charset=utf-8\r\n"
            "X-Accel-Buffering: no\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1"))
        if head_only:
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
            return
        # The current state at once: the page fills without waiting a tick.
        writer.write(f"retry: {RETRY_MS}\n\n".encode() + self._frame)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
        while not self._closing:
            tick = self._tick
            try:
                await asyncio.wait_for(tick.wait(), 15.0)
                frame = self._frame
            except TimeoutError:
                frame = b": keep-alive\n\n"  # the ticker is stalled; keep proxies open
            if self._closing:
                break
            writer.write(frame)
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
