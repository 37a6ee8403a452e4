"""Small helpers for the command-line tools."""
