"""The ResourceMonitor actor's room: resource sampling and backpressure."""
