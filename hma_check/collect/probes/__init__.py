"""Outside-in probes: anonymous HTTPS requests and TLS handshakes against the published endpoints."""
