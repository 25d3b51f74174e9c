"""Small shared utilities: YAML with positions, atomic writes, secret scrubbing, shipped resources."""
