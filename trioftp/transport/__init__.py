"""Byte moving shared by server and client: the v2 channel, inboxes, sinks, task helpers."""
