"""The lab's HTTP request reading (hma_lab.httpd): the header fields a handler sees are the ones the standard
library's parser (http.client.parse_headers, email's compat32 policy) gives it, and its limits answer the same."""

from __future__ import annotations

import http.client
import io
import socket
import threading

import pytest

from hma_lab.httpd import LabHTTPServer, LeanRequestHandler, read_headers

BLOCKS = [
    b"Host: 127.0.0.1:5986\r\nUser-Agent: Python PSRP Client\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\n"
    b"Connection: Keep-Alive\r\nContent-Type: application/soap+xml;charset=UTF-8\r\nContent-Length: 2345\r\n\r\n",
    b"content-length:  12 \r\nCONTENT-TYPE:\ttext/plain\r\nX-Dup: one\r\nx-dup: two\r\nEmpty:\r\n\r\n",
    b"Authorization: Negotiate TlRMTVNTUAAB\r\nX-Folded: first\r\n  second\r\n\tthird\r\nAfter: yes\r\n\r\n",
    b"Host: a\nX-Lf: only\n folded\n\n",
    b" leading continuation\r\nHost: b\r\n\r\n",
    b"Host: c\r\nnot a header line\r\nX-Later: hidden\r\n\r\n",
    b"Host: d\r\nBad Name: x\r\nX-Later: hidden\r\n\r\n",
    b":empty-name\r\nHost: e\r\nX-Latin: caf\xe9\r\n\r\n",
    b"\r\n",
    # email splits a line at a bare CR; drops a continuation of a field it dropped; reads past a "From " line
    b"X-A: 1\rX-B: 2\r\n\r\n",
    b"Content-Length: 2\rX-B: 1\r\n\r\n",
    b"X-A: 1\r\n:x\r\n more\r\n\r\n",
    b"From x\r\nX-A: 1\r\n\r\n",
    b"X-A: 1\r\nFrom x\r\nX-B: 2\r\n\r\n",
    b"X-A: 1\r\nX-B: 2\r\nFrom x\r\n\r\n",
    b"X-A:\t \t spaced \t\r\nX-B:2\nX-C: \x00\x7f\r\n\r\n",
]
NAMES = ["Host", "host", "Content-Length", "content-type", "X-Dup", "Empty", "Authorization", "X-Folded", "After",
         "X-Lf", "X-Later", "X-Latin", "", "Missing", "Connection", "Expect", "X-A", "X-B", "X-C", "From x"]


@pytest.mark.parametrize("block", BLOCKS)
def test_the_fields_are_the_ones_the_standard_library_reads(block):
    expected = http.client.parse_headers(io.BytesIO(block + b"body"))
    got = read_headers(io.BytesIO(block + b"body"))
    for name in NAMES:
        assert got.get(name) == expected.get(name), name
        assert got.get(name, "default") == expected.get(name, "default"), name
        assert got[name] == expected[name], name
        assert (name in got) == (name in expected), name
        assert got.get_all(name) == expected.get_all(name), name
    assert got.items() == expected.items()
    assert got.keys() == expected.keys() and list(got) == list(expected) and len(got) == len(expected)


@pytest.mark.parametrize("block", [b"X-Long: " + b"a" * 65536 + b"\r\n\r\n",
                                   b"".join(b"X-%d: v\r\n" % n for n in range(101)) + b"\r\n",
                                   b"".join(b"X-%d: v\r\n" % n for n in range(100)) + b"\r\n"])
def test_the_limits_are_the_standard_librarys(block):
    # the blank line that ends the block counts as one of the 100 lines: 100 fields are too many
    with pytest.raises(http.client.HTTPException) as expected:
        http.client.parse_headers(io.BytesIO(block))
    with pytest.raises(Exception) as got:
        read_headers(io.BytesIO(block))
    assert str(got.value) == str(expected.value)


def test_the_most_lines_the_standard_library_reads_are_read():
    block = b"".join(b"X-%d: v\r\n" % n for n in range(99)) + b"\r\n"
    assert http.client.parse_headers(io.BytesIO(block)).get("X-98") == "v"
    assert read_headers(io.BytesIO(block)).get("X-98") == "v"


class _Echo(LeanRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        text = f"{self.command} {self.path} {self.request_version} {self.headers.get('X-Test')} {body.decode()}"
        payload = text.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST


class _BufferedEcho(_Echo):
    wbufsize = 16 * 1024   # as the WSMan handler: headers and a small body in one write


@pytest.fixture(params=[_Echo, _BufferedEcho])
def server(request):
    httpd = LabHTTPServer(("127.0.0.1", 0), request.param)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address
    httpd.shutdown()
    httpd.server_close()


def _exchange(address, raw: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_requests_keep_alive_close_and_expect_continue_as_the_standard_library(server):
    two = (b"POST //x/../PowerShell HTTP/1.1\r\nX-Test: one\r\nContent-Length: 2\r\n\r\nhi"
           b"POST /PowerShell HTTP/1.1\r\nX-Test: two\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
           b"POST /never HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    answer = _exchange(server, two)
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.endswith(b"POST /PowerShell HTTP/1.1 two ")
    assert b"POST /x/../PowerShell HTTP/1.1 one hi" in answer
    with socket.create_connection(server, timeout=5) as sock:
        # a client that waits for the 100 Continue before it sends the body: it must come at once, not with the 200
        sock.sendall(b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"z")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
    assert _exchange(server, b"POST /p HTTP/1.0\r\nContent-Length: 1\r\n\r\nzPOST /q HTTP/1.0\r\n\r\n").count(b"200 OK") == 1


@pytest.mark.parametrize("raw, status", [
    (b"POST /p HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(100)) + b"\r\n", b"431"),
    (b"POST /p HTTP/1.1\r\nX-Long: " + b"a" * 65536 + b"\r\n\r\n", b"431"),
    (b"POST /p HTTP/2.0\r\n\r\n", b"505"),
    (b"POST /p HTTP/x\r\n\r\n", b"400"),
    (b"POST /p q HTTP/1.1\r\n\r\n", b"400"),
    (b"GET /p\r\n", b"GET /p HTTP/0.9 None"),
])
def test_any_other_request_line_and_an_oversized_header_block_answer_as_the_standard_library(server, raw, status):
    assert status in _exchange(server, raw)
