"""dinfer client SDK. Public names are re-exported here; implementations live in private modules."""

from dinfer.sdk._signing import async_openai_client, node_address, openai_client, signing_hook

__all__ = ["async_openai_client", "node_address", "openai_client", "signing_hook"]
