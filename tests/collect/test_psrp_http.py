"""A session's POSTs on its signed-in connection (hma_check/collect/psrp_http.py) are the bytes requests writes,
read as requests reads them, and everything they cannot carry is left to requests.

The server is a TLS listener on loopback that answers each request with the next scripted answer and records every
request, and the connection it came on; the client is pypsrp's own transport and session (its headers, its pool)."""

from __future__ import annotations

import gzip
import http.client
import re
import socket
import ssl
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import requests
from pypsrp.wsman import WSMan

from hma_check.collect import psrp_wire
from hma_check.collect.psrp_http import Head
from tests.support import pki

CLOSE = object()        # an answer: close the connection without answering
GARBAGE = object()      # an answer: a TLS record the client cannot decrypt, written under the TLS layer


def ok(body: bytes = b"<answer/>", *headers: str, status: str = "200 OK",
       content_type: str = "application/soap+xml;charset=UTF-8") -> bytes:
    head = "".join(f"{header}\r\n" for header in headers)
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n").encode() + body


class Server:
    """Answers the n-th request with ``answers[n]``: bytes to send; CLOSE; ``(bytes, CLOSE)``, those bytes and then
    the connection closed; or a number, seconds to wait before closing without an answer."""

    def __init__(self, folder: Path, answers: list, ca: pki.Identity | None = None) -> None:
        ca = ca or pki.make_ca()
        cert, key = pki.make_server(ca).write(folder, f"server-{id(self)}")
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(ca.certificate.public_bytes(pki.serialization.Encoding.PEM))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answers = list(answers)
        self.seen: list[tuple[int, bytes, bytes]] = []    # (connection number, head, body) of each request
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            return
        buffer = b""
        with tls:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = tls.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))
                while len(buffer) < length:
                    buffer += tls.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                self.seen.append((number, head, body))
                answer = self.answers.pop(0)
                if isinstance(answer, (int, float)):
                    time.sleep(answer)
                    return
                if answer is CLOSE:
                    return
                if answer is GARBAGE:
                    raw = socket.socket(fileno=tls.detach())
                    raw.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
                    time.sleep(0.5)
                    raw.close()
                    return
                closing = isinstance(answer, tuple)
                tls.sendall(answer[0] if closing else answer)
                if closing:
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def server(tmp_path):
    made: list[Server] = []

    def make(*answers, ca: pki.Identity | None = None) -> Server:
        made.append(Server(tmp_path, list(answers), ca))
        return made[-1]

    yield make
    for each in made:
        each.close()


def transport_for(server: Server, *, read_timeout: int = 5):
    """pypsrp's HTTPS transport and session (Basic auth: a header on every request, no 401 round), to ``server``."""
    transport = WSMan("localhost", port=server.port, path="wsman", ssl=True, auth="basic", username="u",
                      password="p", cert_validation=str(server.ca_file), connection_timeout=5,
                      read_timeout=read_timeout).transport
    transport.session = transport._build_session()
    transport.session.trust_env = False
    transport.session.proxies = {}
    return transport


def send(transport, body: bytes = b"<s:Envelope/>", retries: int = 0, timeout=None) -> bytes:
    return psrp_wire.send(transport, body, retries, timeout)


# ------------------------------------------------------------------------------------------------ the request

@pytest.mark.parametrize("host,port", [("ex01.contoso.local", 443), ("ex01.contoso.local", 5986),
                                       ("10.0.0.7", 443), ("fe80::1", 5986), ("m\u00fcnchen.contoso.local", 443)])
def test_the_head_is_the_one_http_client_writes(host, port):
    transport = WSMan(host, port=port, path="PowerShell", ssl=True, auth="ntlm", username="u", password="p").transport
    session = transport._build_session()
    session.trust_env = False
    prepared = psrp_wire._prepare(session, transport.endpoint)
    prepared.headers["Content-Length"] = "1234"
    writer = http.client.HTTPSConnection(host, port)
    writer.putrequest("POST", prepared.path_url, skip_accept_encoding=True)
    for name, value in prepared.headers.items():
        writer.putheader(name, value)
    expected = b"\r\n".join(writer._buffer) + b"\r\n\r\n"     # what endheaders() would send
    head = Head("POST", prepared.path_url, writer.host, writer.port, writer.default_port, prepared.headers)
    assert head.bytes_for(1234) == expected


def test_after_the_first_answer_requests_go_out_on_the_same_connection_as_requests_wrote_them(server):
    lab = server(ok(b"one"), ok(b"two"), ok(b"three"))
    transport = transport_for(lab)
    through_requests = []
    session_send = transport.session.send
    transport.session.send = lambda *args, **kwargs: through_requests.append(1) or session_send(*args, **kwargs)
    assert [send(transport, b"<a/>"), send(transport, b"<b/>"), send(transport, b"<cde/>")] == \
        [b"one", b"two", b"three"]
    assert through_requests == [1]      # the first; the second and third went out directly
    (first, head1, body1), (second, head2, body2), (third, head3, body3) = lab.seen
    assert first == second == third == 1 and lab.connections == 1
    assert head1 == head2 and head3 == head1.replace(b"Content-Length: 4", b"Content-Length: 6")
    assert b"\r\nAuthorization: Basic dTpw\r\n" in head1 + b"\r\n" and (body1, body2, body3) == (b"<a/>", b"<b/>", b"<cde/>")


# ------------------------------------------------------------------------------------------------ the answer

FRAMINGS = {
    "chunked, with extensions and a trailer": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;name=x\r\n<ans\r\n5\r\nwer/>\r\n0\r\nX-T: 1\r\n\r\n",
        b"<answer/>", True),
    "LF line ends": (b"HTTP/1.1 200 OK\nContent-Length: 9\n\n<answer/>", b"<answer/>", True),
    "an interim 100 Continue first": (b"HTTP/1.1 100 Continue\r\n\r\n" + ok(), b"<answer/>", True),
    "a folded header": (b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  b\r\nContent-Length: 9\r\n\r\n<answer/>", b"<answer/>", True),
    "gzip, though identity was asked": (ok(gzip.compress(b"<answer/>"), "Content-Encoding: gzip"), b"<answer/>", True),
    "Connection: close": (ok(b"<answer/>", "Connection: close"), b"<answer/>", False),
    "HTTP/1.0 without keep-alive": (ok(b"<answer/>").replace(b"HTTP/1.1", b"HTTP/1.0"), b"<answer/>", False),
    "a body to the connection's end": ((b"HTTP/1.1 200 OK\r\n\r\n<answer/>", CLOSE), b"<answer/>", False),
    "bytes after the body": (ok() + b"HTTP/1.1 200 OK\r\n", b"<answer/>", False),
    "a bare CR between two fields (email's parser splits there)": (
        b"HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 9\r\n\r\n<answer/>", b"<answer/>", True),
    "HTTP/1.0 with keep-alive": (ok(b"<answer/>", "Connection: keep-alive").replace(b"HTTP/1.1", b"HTTP/1.0"),
                                 b"<answer/>", True),
    "204 No Content": (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
    "Transfer-Encoding other than chunked, with a length": (ok(b"<answer/>", "Transfer-Encoding: identity"),
                                                            b"<answer/>", True),
    "gzip in two members": (ok(gzip.compress(b"<ans") + gzip.compress(b"wer/>"), "Content-Encoding: gzip"),
                            b"<answer/>", True),
}


@pytest.mark.parametrize("name", FRAMINGS)
def test_an_answer_is_read_as_requests_reads_it_and_the_connection_kept_only_when_it_may_be(server, name):
    answer, body, kept = FRAMINGS[name]
    lab = server(ok(b"first"), answer, ok(b"next"))
    transport = transport_for(lab)
    assert send(transport) == b"first"
    assert send(transport) == body
    assert send(transport) == b"next"
    assert [number for number, _, _ in lab.seen] == [1, 1, 1 if kept else 2]


@pytest.mark.parametrize("status", ["500 Internal Server Error", "503 Service Unavailable", "429 Too Many Requests"])
def test_an_http_error_is_the_one_pypsrps_path_raises(server, status):
    """urllib3 retries no POST, so a 503 or 429 fails at once there too (pypsrp's Retry has a status list, but
    POST is not among its methods)."""
    page = ok(b"<html>Try later</html>", status=status)
    lab = server(ok(), page, page)
    transport = transport_for(lab)
    send(transport)
    with pytest.raises(Exception) as direct:
        send(transport)
    assert lab.connections == 1
    with pytest.raises(Exception) as through_pypsrp:
        transport_for(lab).send(b"<s:Envelope/>")
    assert (type(direct.value), str(direct.value), direct.value.code) == \
        (type(through_pypsrp.value), str(through_pypsrp.value), through_pypsrp.value.code)
    assert direct.value.response_text == "<html>Try later</html>" and len(lab.seen) == 3


def test_an_error_page_is_decoded_in_the_charset_it_declares(server):
    text = "Zugriff f\u00fcr Benutzer verweigert, Acc\u00e8s refus\u00e9"
    page = ok(text.encode("iso-8859-1"), status="500 Internal Server Error", content_type="text/html; charset=iso-8859-1")
    lab = server(ok(), page, page)
    transport = transport_for(lab)
    send(transport)
    with pytest.raises(Exception) as direct:
        send(transport)
    with pytest.raises(Exception) as through_pypsrp:
        transport_for(lab).send(b"<s:Envelope/>")
    assert direct.value.response_text == through_pypsrp.value.response_text == text


def test_a_redirect_to_another_server_does_not_become_the_sessions_connection(server, tmp_path):
    """requests drops the Authorization header when it follows a redirect to another origin; the request prepared
    for the endpoint (with its Authorization) must never go out on that other server's connection."""
    ca = pki.make_ca()
    other = server(ok(b"first"), ok(b"second"), ca=ca)
    endpoint = server(ok(b"", f"Location: https://localhost:{other.port}/other", status="307 Temporary Redirect"),
                      ok(b"", f"Location: https://localhost:{other.port}/other", status="307 Temporary Redirect"),
                      ca=ca)
    transport = transport_for(endpoint)
    assert send(transport) == b"first" and send(transport) == b"second"
    assert getattr(transport, "_hma_kept", None) is None
    assert [head.split(b"\r\n")[0] for _, head, _ in other.seen] == [b"POST /other HTTP/1.1"] * 2
    assert not any(b"\r\nAuthorization:" in head for _, head, _ in other.seen)
    assert all(b"\r\nAuthorization: Basic" in head for _, head, _ in endpoint.seen)


@pytest.mark.parametrize("status", ["401 Unauthorized", "302 Found", "307 Temporary Redirect"])
def test_an_answer_requests_would_act_on_is_left_to_requests(server, status):
    lab = server(ok(), ok(b"moved", "Location: https://localhost/wsman", status=status), ok(b"done"))
    transport = transport_for(lab)
    send(transport)
    assert send(transport, b"<again/>") == b"done"
    assert [body for _, _, body in lab.seen] == [b"<s:Envelope/>", b"<again/>", b"<again/>"]
    signed_out = status.startswith("401")      # a connection signed out: the session leaves it to requests
    assert (transport._hma_kept is False) == signed_out


def test_a_cookie_set_on_a_direct_answer_is_kept_and_sent_back(server):
    lab = server(ok(), ok(b"<answer/>", "Set-Cookie: X-BackEndCookie=ex01; path=/"), ok(b"again"))
    transport = transport_for(lab)
    send(transport)
    send(transport)
    assert transport.session.cookies.get("X-BackEndCookie") == "ex01"
    assert send(transport) == b"again"
    assert b"\r\nCookie: X-BackEndCookie=ex01" in lab.seen[2][1]


def test_a_cookie_set_with_an_answer_left_to_requests_goes_with_the_request_sent_again(server):
    lab = server(ok(), ok(b"moved", "Set-Cookie: affinity=ex02; path=/", "Location: https://localhost/wsman",
                          status="302 Found"), ok(b"done"))
    transport = transport_for(lab)
    send(transport)
    assert send(transport, b"<again/>") == b"done"
    assert b"\r\nCookie: affinity=ex02" in lab.seen[2][1] and lab.seen[2][2] == b"<again/>"


# ------------------------------------------------------------------------------------------------ failures

MALFORMED = {
    "not HTTP": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "a folded line first": b"HTTP/1.1 200 OK\r\n folded\r\nContent-Length: 9\r\n\r\n<answer/>",
    "a header without a colon": b"HTTP/1.1 200 OK\r\nContent-Length 9\r\n\r\n<answer/>",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nContent-Length: 10\r\n\r\n<answer/>",
    "a negative length": b"HTTP/1.1 200 OK\r\nContent-Length: -9\r\n\r\n<answer/>",
    "a bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "100 headers (http.client counts the empty line)": b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 99
                                                       + b"Content-Length: 0\r\n\r\n",
    "a body cut short": (b"HTTP/1.1 200 OK\r\nContent-Length: 90\r\n\r\n<answer/>", CLOSE),
    "no answer": CLOSE,
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_broken_answer_fails_as_a_connection_error_and_the_connection_is_not_used_again(server, name):
    lab = server(ok(), MALFORMED[name], ok(b"later"))
    transport = transport_for(lab)
    send(transport)
    with pytest.raises(requests.exceptions.ConnectionError) as caught:
        send(transport)
    assert "Connection aborted." in str(caught.value)
    assert send(transport) == b"later" and lab.seen[-1][0] == 2


def test_memory_grows_with_what_arrives_not_with_the_length_claimed(server):
    lab = server(ok(), (b"HTTP/1.1 200 OK\r\nContent-Length: 300000000\r\n\r\n<answer/>", CLOSE))
    transport = transport_for(lab)
    send(transport)
    tracemalloc.start()
    try:
        with pytest.raises(requests.exceptions.ConnectionError, match="IncompleteRead"):
            send(transport)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_a_record_that_does_not_decrypt_is_requests_ssl_error(server):
    lab = server(ok(), GARBAGE)
    transport = transport_for(lab)
    send(transport)
    with pytest.raises(requests.exceptions.SSLError):
        send(transport)


def test_an_endless_head_fails_within_its_bound(server):
    lab = server(ok(), b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * (2 << 20))
    transport = transport_for(lab)
    send(transport)
    with pytest.raises(requests.exceptions.ConnectionError, match="longer than"):
        send(transport)


def test_a_silent_server_is_a_read_timeout_after_the_read_timeout(server):
    lab = server(ok(), 5)
    transport = transport_for(lab, read_timeout=1)
    send(transport)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        send(transport)
    assert time.monotonic() - started < 3


def test_a_read_timeout_is_retried_as_pypsrp_retries_it(server):
    lab = server(ok(), 3, ok(b"second try"))
    transport = transport_for(lab, read_timeout=1)
    transport.reconnection_backoff = 0.1
    send(transport)
    assert send(transport, b"<receive/>", retries=1) == b"second try"
    assert [(number, body) for number, _, body in lab.seen[1:]] == [(1, b"<receive/>"), (2, b"<receive/>")]


def test_a_connection_the_server_closed_while_idle_is_left_to_requests(server):
    lab = server((ok(b"first"), CLOSE), ok(b"second"))
    transport = transport_for(lab)
    assert send(transport) == b"first"
    time.sleep(0.2)     # the server's close has arrived: urllib3's pool finds the connection dropped
    assert send(transport) == b"second"
    assert [number for number, _, _ in lab.seen] == [1, 2]


def test_a_pool_through_a_proxy_is_left_to_requests(server):
    from urllib3.util import parse_url

    lab = server(ok(b"first"), ok(b"second"))
    transport = transport_for(lab)
    send(transport)
    kept = transport._hma_kept
    kept.pool.proxy = parse_url("http://proxy.contoso.local:8080")    # what urllib3 sets on a proxy's pool
    assert kept.post(b"<s:Envelope/>", 5) is None
    assert len(lab.seen) == 1


def test_against_the_lab_a_sessions_calls_after_the_sign_in_go_out_directly(monkeypatch):
    """Over loopback against the lab (NTLM over HTTPS, as the scan signs in): once the session is open, its cmdlet
    calls (Command, Receive, Signal) no longer go through requests. Pins that the shortcut is taken with the
    pinned pypsrp, requests and urllib3 (it would otherwise turn itself off without failing anything)."""
    from hma_check.collect.psrp_client import RemoteSession
    from hma_lab.runtime import Lab
    from tests.support.lab import exchange_settings

    through_requests: list[str] = []
    session_send = requests.Session.send

    def counted(self, request, **kwargs):
        through_requests.append(request.method)
        return session_send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", counted)
    with Lab("ready") as lab:
        session = RemoteSession(exchange_settings(lab.scan_config()), lab.credentials.password).open()
        try:
            opened = len(through_requests)
            for _ in range(3):
                assert session.run("Get-AcceptedDomain", (), 30)
            assert len(through_requests) == opened and len(lab.command_log) >= 3
            assert isinstance(session._wsman.transport._hma_kept, psrp_wire.KeptConnection)
        finally:
            session.close()
