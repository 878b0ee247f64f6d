"""The executor host actor's room: runs tasks with the executors it hosts."""
