"""Domain knowledge the check expressions use: Exchange builds, server TLS, Entra ID policies."""
