"""Command line: parse, call the library, format. No logic of its own."""
