"""A session's WSMan POST on the keep-alive connection requests has signed in, written and read directly.

NTLM, Kerberos and Negotiate sign in a TCP connection, not a request: once requests' auth hook has answered the
server's 401 on a connection, every later POST of the session goes out on that same connection with nothing but
its body changing. Through requests, urllib3 and http.client each of those POSTs cost about as much CPU as
everything else a cmdlet call does (three POSTs per call): the session's settings merged, the CA bundle looked up
on disk, the pool's key normalised, the answer's headers parsed by the email package. Here the request is one
write of a head made once per session, and the answer is read by a small HTTP/1.1 reader.

Only what needs nothing more is sent this way (``post`` returns None for anything else, and requests sends it):
an HTTPS connection straight to the server (no proxy) that urllib3's pool hands back alive and connected.
An answer other than 200 goes back to the caller, which sends the request again through requests when the
server did not act on it and requests would have sent another (401: the connection must be signed in again; a
redirect), so requests' auth hook and redirects behave as they always did. A failure is the exception
requests raises for it (ConnectionError, ReadTimeout, SSLError) so the caller's handling stays the same.

RFC 9112 (HTTP/1.1 message syntax): https://www.rfc-editor.org/rfc/rfc9112
"""

from __future__ import annotations

import re
import socket
import ssl
import zlib
from typing import Any

MAX_LINE = 65536      # http.client's _MAXLINE: one status or header line
MAX_HEADERS = 100     # http.client's _MAXHEADERS
MAX_HEAD = 1 << 20     # the status line and headers together (IIS limits a head to 16 KB by default)
_CHUNK = 65536


class Reply:
    """An answer as read: its status, headers and body (Content-Encoding undone, as urllib3 undoes it)."""

    __slots__ = ("status", "headers", "body", "set_cookies")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, set_cookies: list[str]) -> None:
        self.status = status
        self.headers = headers          # lower-case names; a repeated header's values joined by ", "
        self.body = body
        self.set_cookies = set_cookies  # each Set-Cookie as sent (they cannot be joined)


class Head:
    """The request line and headers of a session's POST, made once: ``bytes_for(n)`` is the head for a body of
    ``n`` bytes, as http.client writes it for urllib3 (request line, Host, then the headers in the request's
    order, latin-1)."""

    __slots__ = ("_before", "_after")

    def __init__(self, method: str, path: str, host: str, port: int, default_port: int, headers: Any) -> None:
        try:
            host_text = host.encode("ascii").decode("ascii")
        except UnicodeEncodeError:
            host_text = host.encode("idna").decode("ascii")
        if ":" in host:   # an IPv6 address: bracketed, without its zone (http.client's _strip_ipv6_iface)
            host_text = f"[{host_text.partition('%')[0]}]"
        if port != default_port:
            host_text = f"{host_text}:{port}"
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host_text}"]
        before: list[str] | None = None
        for name, value in headers.items():
            if name.lower() == "content-length":
                before, lines = lines, []
                continue
            lines.append(f"{name}: {value}")
        if before is None:
            raise ValueError("the prepared request has no Content-Length")
        self._before = ("\r\n".join(before) + "\r\nContent-Length: ").encode("latin-1")
        self._after = "".join(f"\r\n{line}" for line in lines).encode("latin-1") + b"\r\n\r\n"

    def bytes_for(self, length: int) -> bytes:
        return self._before + str(length).encode("ascii") + self._after


class KeptConnection:
    """A session's signed-in connection pool and its POST's head: ``post`` sends on its live connection."""

    __slots__ = ("session", "pool", "_request", "_head")

    def __init__(self, session: Any, pool: Any, request: Any) -> None:
        self.session = session     # requests' Session this was made for
        self.pool = pool           # urllib3's pool of the session's connections to the endpoint
        self._request = request    # the session's POST as requests prepared it (headers, path)
        self._head: Head | None = None

    def post(self, body: bytes, timeout: float | None) -> Reply | None:
        """POST ``body`` on the pool's signed-in connection, or None when it has none (a new connection is for
        requests to open and sign in). Raises what requests would raise for a failed exchange."""
        pool = self.pool
        if getattr(pool, "proxy", None) is not None:   # a pool through a proxy: requests sends on it
            return None
        try:
            conn = pool._get_conn()   # urllib3's: the pooled connection, closed if the server has dropped it
        except Exception:  # noqa: BLE001 - a closed pool: requests reports it, as it always has
            return None
        sock = getattr(conn, "sock", None)
        if not isinstance(sock, ssl.SSLSocket):
            pool._put_conn(conn)     # a new connection: requests connects and signs it in
            return None
        if self._head is None:
            try:
                self._head = Head("POST", self._request.path_url, conn.host, conn.port, conn.default_port,
                                  self._request.headers)
            except ValueError:   # a request this head cannot be made for: requests sends it
                pool._put_conn(conn)
                return None
        reusable = False
        try:
            sock.settimeout(timeout)
            try:
                sock.sendall(self._head.bytes_for(len(body)) + body)
            except (BrokenPipeError, ConnectionResetError):
                pass   # as urllib3: a server may answer (400, 413) and close before it has read the whole request
            except socket.timeout as exc:
                raise _Malformed(f"the request could not be written in time ({exc})") from None
            reply, reusable = _read_reply(sock)
            return reply
        except socket.timeout:
            raise _requests().ReadTimeout(f"Read timed out. (read timeout={timeout})") from None
        except ssl.SSLError as exc:
            raise _requests().SSLError(exc) from None
        except (OSError, _Malformed) as exc:
            from requests.models import ProtocolError  # urllib3's, as requests imports it

            raise _requests().ConnectionError(ProtocolError("Connection aborted.", exc)) from None
        finally:
            if not reusable:
                conn.close()
            pool._put_conn(conn)


def _requests() -> Any:
    """requests' exceptions, imported only when one is raised (``post`` runs three times a cmdlet call)."""
    import requests.exceptions

    return requests.exceptions


class _Malformed(Exception):
    """An answer that is not HTTP/1.1 (http.client's BadStatusLine, LineTooLong, IncompleteRead...)."""


_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")


class _Reader:
    """The answer's bytes, read from the socket as they are needed."""

    __slots__ = ("sock", "buffer", "start")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.buffer = b""
        self.start = 0

    def _more(self, what: str) -> None:
        data = self.sock.recv(_CHUNK)
        if not data:
            raise _Malformed("Remote end closed connection without response" if not self.buffer
                             else f"the connection closed inside the {what}")
        self.buffer = self.buffer[self.start:] + data
        self.start = 0

    def head(self) -> list[bytes]:
        """The status line and header lines, up to the empty line (CRLF or, as http.client reads them, LF). A bare
        CR ends a line too: http.client hands the block to the email parser, which splits there as well."""
        while True:
            found = _END_OF_HEAD.search(self.buffer, self.start)
            if found:
                lines = self.buffer[self.start:found.start()].splitlines()
                self.start = found.end()
                return lines
            if len(self.buffer) - self.start > MAX_HEAD:
                raise _Malformed(f"an answer's head longer than {MAX_HEAD} bytes")
            self._more("head")

    def line(self, what: str) -> bytes:
        """One line (a chunk's size, a trailer field), without its CRLF or LF."""
        while True:
            end = self.buffer.find(b"\n", self.start)
            if end >= 0:
                found = self.buffer[self.start:end]
                self.start = end + 1
                return found[:-1] if found.endswith(b"\r") else found
            if len(self.buffer) - self.start > MAX_LINE:
                raise _Malformed(f"a {what} line longer than {MAX_LINE} bytes")
            self._more(what)

    def exactly(self, count: int) -> bytes:
        """The next ``count`` bytes. Memory grows with what arrives, not with what the server claims is coming."""
        have = len(self.buffer) - self.start
        if have >= count:
            found = self.buffer[self.start:self.start + count]
            self.start += count
            return found
        parts = [self.buffer[self.start:]]
        self.buffer, self.start = b"", 0
        while have < count:
            data = self.sock.recv(min(count - have, _CHUNK))
            if not data:
                raise _Malformed(f"IncompleteRead({have} bytes read, {count - have} more expected)")
            parts.append(data)
            have += len(data)
        return b"".join(parts)

    def rest(self) -> bytes:
        """Everything up to the connection's end (an answer framed by closing it)."""
        parts = [self.buffer[self.start:]]
        self.buffer, self.start = b"", 0
        while data := self.sock.recv(_CHUNK):
            parts.append(data)
        return b"".join(parts)

    def leftover(self) -> bool:
        return self.start < len(self.buffer)


def _read_reply(sock: Any) -> tuple[Reply, bool]:
    reader = _Reader(sock)
    while True:
        lines = reader.head()
        version, status = _status(lines[0] if lines else b"")
        headers, cookies = _headers(lines[1:])
        if status != 100:
            break    # a 100 Continue is skipped, as http.client skips it (and only it)
    connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    if status in (204, 304) or 100 <= status < 200:
        body = b""
    elif headers.get("transfer-encoding", "").strip().lower() == "chunked":   # as http.client decides it
        body = _chunked(reader)
    elif "transfer-encoding" in headers and "content-length" not in headers:
        body, keep = reader.rest(), False   # another coding, no length: the body runs to the connection's end
    elif "content-length" in headers:
        lengths = {value.strip() for value in headers["content-length"].split(",")}
        length = lengths.pop() if len(lengths) == 1 else ""
        if not length.isdigit() or not length.isascii():
            raise _Malformed(f"invalid Content-Length {headers['content-length']!r}")
        body = reader.exactly(int(length))
    else:
        body, keep = reader.rest(), False
    if reader.leftover():   # bytes nobody asked for: the connection's framing cannot be trusted any more
        keep = False
    return Reply(status, headers, _decoded(body, headers.get("content-encoding", "")), cookies), keep


def _status(line: bytes) -> tuple[str, int]:
    parts = line.split(None, 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or len(parts[1]) != 3 \
            or not parts[1].isdigit():
        raise _Malformed(f"BadStatusLine({line[:100]!r})")
    return parts[0].decode("ascii"), int(parts[1])


def _headers(lines: list[bytes]) -> tuple[dict[str, str], list[str]]:
    if len(lines) >= MAX_HEADERS:   # http.client counts the empty line that ends them
        raise _Malformed(f"got more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    cookies: list[str] = []
    name = ""
    for raw in lines:
        if len(raw) > MAX_LINE:
            raise _Malformed(f"a header line longer than {MAX_LINE} bytes")
        text = raw.decode("latin-1")
        if text[:1] in (" ", "\t"):   # an obsolete folded line continues the previous field (RFC 9112 5.2)
            if not name:
                raise _Malformed("a folded line before any header")
            headers[name] += " " + text.strip()
            continue
        field, colon, value = text.partition(":")
        if not colon or not field or field != field.strip():
            raise _Malformed("an invalid header line")
        name, value = field.lower(), value.strip()
        if name == "set-cookie":
            cookies.append(value)
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers, cookies


def _chunked(reader: _Reader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = reader.line("chunk size")
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _Malformed(f"invalid chunk size {size_line[:100]!r}") from None
        if size_text.startswith((b"-", b"+", b"0x", b"0X")) or size < 0:
            raise _Malformed(f"invalid chunk size {size_line[:100]!r}")
        if size == 0:
            while reader.line("trailer"):   # trailer fields, up to the empty line
                pass
            return b"".join(parts)
        parts.append(reader.exactly(size))
        if reader.line("chunk end"):
            raise _Malformed("a chunk longer than its size")


def _decoded(body: bytes, coding: str) -> bytes:
    """What urllib3 gives for a Content-Encoding (decode_content=True): gzip (every member) and deflate undone, the
    last coding first; a body with a coding it does not know as sent. pypsrp asks for identity, so this is a server
    that compressed anyway (IIS with dynamic compression)."""
    codings = [c.strip().lower() for c in coding.split(",") if c.strip()]
    if not body or not codings or any(c not in ("gzip", "x-gzip", "deflate", "identity") for c in codings):
        return body
    try:
        for name in reversed(codings):
            if name in ("gzip", "x-gzip"):
                parts, data = [], body
                while data:
                    member = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    parts.append(member.decompress(data))
                    data = member.unused_data if member.eof else b""
                body = b"".join(parts)
            elif name == "deflate":
                try:
                    body = zlib.decompressobj().decompress(body)
                except zlib.error:   # raw deflate, as some servers send it (urllib3 tries it the same way)
                    body = zlib.decompressobj(-zlib.MAX_WBITS).decompress(body)
    except zlib.error as exc:
        raise _Malformed(f"Received response with content-encoding: {coding}, but failed to decode it: {exc}") \
            from None
    return body
