"""CLI: synth, patterns, preview (being written)."""
COMMANDS: list = []
