"""Make any httpx-based client (the official ``openai`` package included) sign dinfer requests."""

from __future__ import annotations

from typing import Any

import httpx

from dinfer.auth import sign_headers

SIGNED_PATHS = ("/chat/completions", "/completions")


def _needs_signature(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith(SIGNED_PATHS)


def signing_hook(private_key: str, ta_address: str) -> Any:
    """An httpx ``request`` event hook adding dinfer's signature headers to inference requests (sync clients)."""

    def hook(request: httpx.Request) -> None:
        if _needs_signature(request):
            request.headers.update(sign_headers(request.read(), private_key, ta_address))

    return hook


def async_signing_hook(private_key: str, ta_address: str) -> Any:
    """The same hook for ``httpx.AsyncClient``."""

    async def hook(request: httpx.Request) -> None:
        if _needs_signature(request):
            request.headers.update(sign_headers(await request.aread(), private_key, ta_address))

    return hook


def node_address(base_url: str, timeout: float = 10.0) -> str:
    """The TA address a host node signs for (``GET /v1/identity``)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    response = httpx.get(f"{root}/v1/identity", timeout=timeout)
    response.raise_for_status()
    return str(response.json()["address"])


def openai_client(base_url: str, private_key: str, *, ta_address: str | None = None, **kwargs: Any) -> Any:
    """The official ``openai.OpenAI`` client, pre-wired to sign every request for the host node at ``base_url``.

    Example:
        >>> client = openai_client("http://127.0.0.1:9000/v1", key)                 # doctest: +SKIP
        >>> client.chat.completions.create(model="HuggingFaceTB/SmolLM2-135M-Instruct",
        ...                                messages=[{"role": "user", "content": "Hi"}])
    """
    import openai

    ta = ta_address or node_address(base_url)
    http_client = httpx.Client(event_hooks={"request": [signing_hook(private_key, ta)]}, timeout=120.0)
    return openai.OpenAI(base_url=base_url, api_key="dinfer-signed-requests", http_client=http_client, **kwargs)


def async_openai_client(base_url: str, private_key: str, *, ta_address: str | None = None, **kwargs: Any) -> Any:
    """``openai.AsyncOpenAI`` pre-wired to sign (the TA address is fetched synchronously once if not given)."""
    import openai

    ta = ta_address or node_address(base_url)
    http_client = httpx.AsyncClient(event_hooks={"request": [async_signing_hook(private_key, ta)]}, timeout=120.0)
    return openai.AsyncOpenAI(base_url=base_url, api_key="dinfer-signed-requests", http_client=http_client,
                              **kwargs)
