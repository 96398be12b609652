"""ML node unit-test fixtures (the shared ones live in ``tests.fixtures``)."""

from __future__ import annotations

from tests.fixtures import smollm2_path, tiny_gguf_path

__all__ = ["smollm2_path", "tiny_gguf_path"]
