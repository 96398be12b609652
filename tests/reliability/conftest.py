"""Fixtures of the fuzz suite, defined in ``fuzz_support`` (test modules import its names from there: a module named
``conftest`` is ambiguous when several test folders are collected together)."""

from fuzz_support import fuzz_discovery, fuzz_host, fuzz_loop, fuzz_mlnode, fuzz_models, http, rss

__all__ = ["fuzz_discovery", "fuzz_host", "fuzz_loop", "fuzz_mlnode", "fuzz_models", "http", "rss"]
