"""Run folders: the manifest and its signature, comparison between runs, post-change (after-enable) validation."""
