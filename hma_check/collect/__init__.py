"""Collectors: each turns one kind of access (Exchange, OS, Graph, probes, files) into snapshot sources."""
