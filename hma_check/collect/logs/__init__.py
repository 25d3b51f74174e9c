"""Exchange's own logs: the HttpProxy log reader (offline import), the live per-server summary (the logs: section)
and the UserAgent table that names each client."""
