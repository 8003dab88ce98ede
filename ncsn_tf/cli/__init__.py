"""The command line's layer: one small function per --mode (run.py parses the flags)."""
