"""dinfer — a decentralized LLM inference network on an EVM ledger."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dinfer")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
