"""The cloudtriggers benchmark (see bench/README.md)."""
