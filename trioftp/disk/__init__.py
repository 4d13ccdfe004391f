"""Operating-system helpers for files: syscalls, early writeback, digests, beneath-root opens."""
