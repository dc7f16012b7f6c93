"""Printing helpers for commands (re-exported from :mod:`edgecv._console`, which library code may use too)."""

from edgecv._console import console, emit_json, err_console, fmt, print_json, print_table, table

__all__ = ["console", "emit_json", "err_console", "fmt", "print_json", "print_table", "table"]
