"""The worker: runs one game, streams it to one player at a time."""
