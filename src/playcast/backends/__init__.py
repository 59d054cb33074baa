"""Game backends: where a worker's video comes from and where input goes."""
