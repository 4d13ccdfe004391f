"""Where the server keeps files."""
