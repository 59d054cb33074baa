"""The signaling server: pairs players with workers and brokers WebRTC."""
