"""``playcast farm``: every phone plugged into this host becomes a worker."""
