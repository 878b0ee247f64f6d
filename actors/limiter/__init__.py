"""The GroupLimiter actor's room: group concurrency policy."""
