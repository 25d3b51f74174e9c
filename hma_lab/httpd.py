"""The threaded HTTP(S) server under the lab's WSMan listeners and Graph service: TLS on each connection's own thread,
quiet about clients that hang up, and no connection left open once the server is closed."""

from __future__ import annotations

import re
import socket
import ssl
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator


class LabHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 overflows when a scan opens a dozen connections at once; Linux then drops
    # the SYN and the client retries only after a second.
    request_queue_size = 128
    handshake_timeout = 10.0

    def __init__(self, address: tuple[str, int], handler: type, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            # The handshake runs on the connection's own thread (finish_request): a slow or silent client must not
            # stall the accept loop, which may serve hundreds of listeners (wsman.ListenerGroup).
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._connections_lock:
            self._connections.add(sock)
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            try:
                request.settimeout(self.handshake_timeout)
                request.do_handshake()
                request.settimeout(None)   # the handler's own timeout applies from here
            except OSError:
                return  # a client that does not trust the lab CA hangs up here: normal for TLS-verification tests
        super().finish_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        """Stop listening and end every open connection: a keep-alive connection's thread would otherwise wait for
        its client's next request long after the lab stopped."""
        super().server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            try:
                # The plain socket's shutdown: SSLSocket.shutdown drops its TLS state under the thread reading it.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-request (a test cancelling, a TLS failure) is normal traffic for a lab


# http.client's limits on a header block, which the standard library's parse_request enforces as well.
_MAX_LINE = 65536
_MAX_HEADERS = 100


class Headers:
    """A request's header fields, as a handler reads them from http.client.parse_headers' message: ``get`` and
    ``[]`` the first value of a name in any case (None when absent), ``get_all`` every value, ``items`` in order.

    Made for a block of plain ``Name: value`` lines (read_headers), without the email package: its feed parser,
    policy and header lookups were a tenth of the lab's instructions per cmdlet call (three requests). The values
    are what email's compat32 policy gives a handler for such lines: the text after the colon, blanks after the
    colon dropped."""

    __slots__ = ("_fields", "_first")

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        self._first: dict[str, str] = {}
        for name, value in fields:
            self._first.setdefault(name.lower(), value)

    def get(self, name: str, default: Any = None) -> Any:
        return self._first.get(name.lower(), default)

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def get_all(self, name: str, failobj: Any = None) -> Any:
        wanted = name.lower()
        found = [value for key, value in self._fields if key.lower() == wanted]
        return found or failobj

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    def keys(self) -> list[str]:
        return [name for name, _ in self._fields]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._fields)


class _HeaderBlockError(Exception):
    def __init__(self, explain: str, detail: str) -> None:
        super().__init__(detail)
        self.explain = explain


def read_headers(rfile: Any) -> Any:
    """The header block after a request line, as http.client.parse_headers reads it: the same limits (a line of
    more than 65536 bytes; more than 100 lines, the blank line that ends them counted) and the same fields.

    A block of plain ``Name: value`` lines (a field name of printable ASCII without a colon, a value without a
    carriage return, every line ending in CRLF or LF), which is what every WSMan client sends, is read here. Any
    other block (a folded line, a line that is no field, a bare CR, a field without a name, a ``From `` line) is
    parsed by the standard library's own parser, which email's compat32 rules make subtle: those rare blocks get
    exactly its message."""
    lines: list[bytes] = []
    while True:
        line = rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _HeaderBlockError("Line too long", f"got more than {_MAX_LINE} bytes when reading header line")
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise _HeaderBlockError("Too many headers", f"got more than {_MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    fields = []
    for line in lines[:-1]:
        plain = _PLAIN_FIELD.fullmatch(line)
        if plain is None:
            return _standard_headers(lines)
        fields.append((plain[1].decode("iso-8859-1"), plain[2].decode("iso-8859-1")))
    return Headers(fields)


# name, then the value as compat32 gives it (blanks after the colon dropped, the line ending not part of it)
_PLAIN_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+):[ \t]*([^\r\n]*)\r?\n")


def _standard_headers(lines: list[bytes]) -> Any:
    """What http.client.parse_headers makes of these lines (its own parsing, after its own reading)."""
    import email.parser
    import http.client

    return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(b"".join(lines).decode("iso-8859-1"))


class LeanRequestHandler(BaseHTTPRequestHandler):
    """BaseHTTPRequestHandler reading the usual request line (``METHOD PATH HTTP/1.x``) and a plain header block
    without the email package (read_headers); any other request line goes through the standard library's
    parse_request, errors and all."""

    def parse_request(self) -> bool:
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.1", "HTTP/1.0"):
            return super().parse_request()
        self.requestline = requestline
        self.command, self.path, self.request_version = words
        self.close_connection = not (words[2] == "HTTP/1.1" and self.protocol_version >= "HTTP/1.1")
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")   # as the standard library does (gh-87389)
        try:
            self.headers = read_headers(self.rfile)  # type: ignore[assignment]
        except _HeaderBlockError as error:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, error.explain, str(error))
            return False
        connection = (self.headers.get("Connection") or "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        if ((self.headers.get("Expect") or "").lower() == "100-continue" and self.protocol_version >= "HTTP/1.1"
                and self.request_version >= "HTTP/1.1"):
            return self.handle_expect_100()
        return True

    def handle_expect_100(self) -> bool:
        """The 100 Continue goes out at once, also through a buffered ``wfile`` (``wbufsize``)."""
        answer = super().handle_expect_100()
        self.wfile.flush()
        return answer
