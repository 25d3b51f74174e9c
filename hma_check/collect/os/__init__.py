"""The server OS collector: read-only WinRM queries per Exchange server (registry, certificates, IIS)."""
