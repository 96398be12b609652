"""vLLM engine for GPU hosts: ``vllm serve`` (its OpenAI server) as a subprocess on a private loopback port.

The command line comes from the governance model: ``vllm serve <hf_repo> --revision <hf_commit>
--served-model-name <model_id> <model_args...>``. vLLM needs a GPU, so here it is exercised against a stand-in
process (``tests/unit/mlnode/vllm_standin.py``) that speaks the same routes; see docs/mlnode.md for GPU use.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from dinfer.errors import EngineFailed, InvalidRequest
from dinfer.mlnode.engines.base import Kind, ModelSpec
from dinfer.mlnode.engines.openai_server import OpenAIServerEngine

# Flags the ML node owns: where the server listens, what it is called, and who may call it.
RESERVED_FLAGS = frozenset({"--host", "--port", "--served-model-name", "--api-key", "--uds", "--revision"})
_FLAG = re.compile(r"^--[a-z0-9][a-z0-9-]*(=.*)?$")
_SAFE_VALUE = re.compile(r"^[^\x00-\x1f]*$")
_SOURCE = re.compile(r"^[A-Za-z0-9_./-]+$")


def validate_vllm_args(args: tuple[str, ...]) -> None:
    """Check the shape of ``vllm serve`` arguments; ``InvalidRequest`` naming the bad one."""
    for i, token in enumerate(args):
        if not _SAFE_VALUE.match(token):
            raise InvalidRequest(f"args[{i}] contains control characters")
        if token.startswith("-"):
            if not _FLAG.match(token):
                raise InvalidRequest(f"args[{i}] is not a valid vLLM flag: {token!r}")
            if token.split("=", 1)[0] in RESERVED_FLAGS:
                raise InvalidRequest(f"args[{i}]: {token.split('=', 1)[0]} is set by the ML node, not by model_args")
        elif i == 0:
            raise InvalidRequest(f"args[0] must be a flag, got {token!r}")


class VLLMEngine(OpenAIServerEngine):
    """Hugging Face models on GPUs through ``vllm serve``."""

    name = "vllm"
    ready_path = "/health"

    def validate_spec(self, spec: ModelSpec) -> None:
        if not _SOURCE.match(spec.source):
            raise InvalidRequest(f"model {spec.model_id!r}: source {spec.source!r} is not a path or repo id")
        validate_vllm_args(spec.args)

    def command(self, spec: ModelSpec, port: int) -> list[str]:
        argv = [*self.settings.vllm_command, "serve", spec.source]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", spec.model_id]
        if spec.revision:
            argv += ["--revision", spec.revision]
        return argv + list(spec.args)

    async def count_prompt_tokens(self, kind: Kind, body: dict[str, Any]) -> int:
        """vLLM's ``POST /tokenize`` applies the chat template for ``messages`` exactly as generation does."""
        self._check_ready()
        if kind == "chat":
            payload: dict[str, Any] = {"model": self.model_id, "messages": body["messages"]}
        else:
            payload = {"model": self.model_id, "prompt": body.get("prompt") or ""}
        try:
            resp = await self._client.post(self.base_url + "/tokenize", json=payload, timeout=30.0)
        except httpx.TransportError as exc:
            raise EngineFailed(f"vllm engine connection failed: {exc}") from exc
        if resp.status_code != 200:
            raise EngineFailed(f"vllm /tokenize failed ({resp.status_code}): {resp.text[:300]}")
        return int(resp.json()["count"])

    async def tokenize(self, text: str) -> list[int]:
        """vLLM's ``POST /tokenize`` of plain text without special tokens."""
        self._check_ready()
        payload = {"model": self.model_id, "prompt": text, "add_special_tokens": False}
        try:
            resp = await self._client.post(self.base_url + "/tokenize", json=payload, timeout=30.0)
        except httpx.TransportError as exc:
            raise EngineFailed(f"vllm engine connection failed: {exc}") from exc
        if resp.status_code != 200:
            raise EngineFailed(f"vllm /tokenize failed ({resp.status_code}): {resp.text[:300]}")
        return [int(t) for t in resp.json().get("tokens") or []]
