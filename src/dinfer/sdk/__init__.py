"""dinfer client SDK. Public names are re-exported here; implementations live in private modules."""

from dinfer.sdk._session_sync import SyncSessionClient
from dinfer.sdk._session_wire import SessionDisconnected, SessionError
from dinfer.sdk._signing import async_openai_client, node_address, openai_client, signing_hook
from dinfer.sdk.sessions import PromptStream, SessionClient, SessionOptions

__all__ = [
    "PromptStream",
    "SessionClient",
    "SessionDisconnected",
    "SessionError",
    "SessionOptions",
    "SyncSessionClient",
    "async_openai_client",
    "node_address",
    "openai_client",
    "signing_hook",
]
