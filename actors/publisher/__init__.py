"""The EventPublisher actor's room: numbered events over pub/sub, and the Prometheus endpoint."""
