"""Offline mode: the collection script customers run, and the import of the folder or zip it writes."""
