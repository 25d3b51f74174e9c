"""The threaded HTTP(S) server under the lab's WSMan listeners and Graph service: TLS on each connection's own thread,
quiet about clients that hang up, and no connection left open once the server is closed."""

from __future__ import annotations

import socket
import ssl
import threading
from http.server import ThreadingHTTPServer
from typing import Any


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
