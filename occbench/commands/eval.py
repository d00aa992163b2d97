"""CLI: eval, protocols, leaderboard (being written)."""
COMMANDS: list = []
