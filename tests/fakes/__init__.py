"""Real loopback servers standing in for cluster services in tests (127.0.0.0/8 only)."""
