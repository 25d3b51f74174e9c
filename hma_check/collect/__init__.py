"""Collectors: each turns one kind of evidence (Exchange, OS, Graph, probes, offline files) into SourceResults."""
