"""llama.cpp engine: ``llama_cpp.server`` as a subprocess on a private loopback port.

The subprocess is ``python -m dinfer.mlnode.engines.llamacpp_server``: the upstream server with its per-token
``top_logprobs`` computed by numpy instead of sorting the vocabulary in Python (same numbers; see that module), since
the executor asks for them on every inference.

Facts of ``llama_cpp.server`` 0.3.36 this engine absorbs: one sequence at a time (the ML node queues), no usage in
streams and ``stream_options`` ignored (the ML node meters), unknown request fields silently ignored, and the chat
format is guessed from the GGUF template unless named — so the engine pins ``--chat_format chat_template.default``
and renders the very same template locally to count prompt tokens exactly as the server does.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from pydantic import ValidationError

from dinfer.config import format_validation_error
from dinfer.errors import EngineFailed, InvalidRequest, ModelNotFound
from dinfer.mlnode.engines.base import Kind, ModelSpec, gguf_magic_ok
from dinfer.mlnode.engines.openai_server import OpenAIServerEngine

# Model settings an operator (or the governance model's model_args) may set. Anything that downloads
# (hf_*), changes where the server listens, or points at other files stays with the ML node.
ALLOWED_ARGS = frozenset(
    {
        "n_ctx", "n_batch", "n_ubatch", "n_threads", "n_threads_batch", "n_gpu_layers", "main_gpu", "split_mode",
        "seed", "flash_attn", "offload_kqv", "use_mmap", "use_mlock", "numa", "mul_mat_q", "logits_all",
        "last_n_tokens_size", "cache", "cache_type", "cache_size", "type_k", "type_v", "rope_scaling_type",
        "rope_freq_base", "rope_freq_scale", "yarn_ext_factor", "yarn_attn_factor", "yarn_beta_fast",
        "yarn_beta_slow", "yarn_orig_ctx",
    }
)  # fmt: skip


DEFAULT_N_CTX = 2048
"""``llama_cpp.server``'s default ``--n_ctx``."""


def parse_flag_pairs(args: tuple[str, ...]) -> dict[str, str]:
    """``("--n_ctx", "2048")`` → ``{"n_ctx": "2048"}``; ``InvalidRequest`` naming the first malformed token."""
    out: dict[str, str] = {}
    if len(args) % 2:
        raise InvalidRequest(f"args must be '--name value' pairs; {args[-1]!r} has no value")
    for i in range(0, len(args), 2):
        flag, value = args[i], args[i + 1]
        if not flag.startswith("--") or len(flag) < 3:
            raise InvalidRequest(f"args[{i}] must be a flag like '--n_ctx', got {flag!r}")
        out[flag[2:].replace("-", "_")] = value
    return out


class LlamaCppEngine(OpenAIServerEngine):
    """GGUF models on CPU (or GPU offload) through llama.cpp's OpenAI server."""

    name = "llamacpp"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._vocab: Any = None  # llama_cpp.Llama(vocab_only=True): local tokenizer for prompt counting
        self._formatter: Any = None  # Jinja2ChatFormatter over the GGUF's own template

    def validate_spec(self, spec: ModelSpec) -> None:
        from pathlib import Path

        path = Path(spec.source)
        if not path.is_file():
            raise ModelNotFound(f"model {spec.model_id!r}: GGUF file {spec.source!r} does not exist")
        if not gguf_magic_ok(path):
            raise InvalidRequest(f"model {spec.model_id!r}: {spec.source!r} is not a GGUF file")
        pairs = parse_flag_pairs(spec.args)
        unknown = sorted(set(pairs) - ALLOWED_ARGS)
        if unknown:
            raise InvalidRequest(
                f"args not allowed for the llamacpp engine: {', '.join('--' + u for u in unknown)}; "
                f"allowed: {', '.join('--' + a for a in sorted(ALLOWED_ARGS))}"
            )
        from llama_cpp.server.settings import ModelSettings

        try:
            ModelSettings(model=spec.source, **pairs)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise InvalidRequest(f"invalid llamacpp args: {format_validation_error(exc)}") from None

    def command(self, spec: ModelSpec, port: int) -> list[str]:
        pairs = parse_flag_pairs(spec.args)
        self.context_window = int(pairs.get("n_ctx", DEFAULT_N_CTX)) or None  # 0 = the model's own length
        argv = [
            sys.executable, "-m", "dinfer.mlnode.engines.llamacpp_server",
            "--model", spec.source,
            "--model_alias", spec.model_id,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--verbose", "False",
            "--chat_format", "chat_template.default",
        ]  # fmt: skip
        # Both thread counts: llama_cpp.server's prompt-batch threads default to every core, so a node limited to
        # one thread would still take the whole machine for each prompt.
        for threads in ("n_threads", "n_threads_batch"):
            if threads not in pairs:
                argv += [f"--{threads}", str(self.settings.engine_threads)]
        for name, value in pairs.items():
            argv += [f"--{name}", value]
        return argv

    async def _after_ready(self, spec: ModelSpec) -> None:
        self._vocab, self._formatter = await asyncio.to_thread(_load_vocab, spec.source)

    async def unload(self) -> None:
        await super().unload()
        self._vocab = self._formatter = None

    async def count_prompt_tokens(self, kind: Kind, body: dict[str, Any]) -> int:
        self._check_ready()
        return await asyncio.to_thread(self._count, kind, body)

    async def tokenize(self, text: str) -> list[int]:
        """Local vocab-only tokenizer (same GGUF as the server): never waits behind a running generation, which
        ``/extras/tokenize`` of ``llama_cpp.server`` would (it shares the model lock)."""
        self._check_ready()
        vocab = self._vocab
        return await asyncio.to_thread(lambda: list(vocab.tokenize(text.encode("utf-8"), add_bos=False,
                                                                   special=False)))

    def _count(self, kind: Kind, body: dict[str, Any]) -> int:
        vocab = self._vocab
        if kind == "completion":
            prompt = str(body.get("prompt") or "")
            return len(vocab.tokenize(prompt.encode("utf-8"), special=True)) if prompt else 1
        # Same call sequence as llama_cpp.llama_chat_format.chat_formatter_to_chat_completion_handler.
        extra = {k: body[k] for k in ("tools", "tool_choice", "functions", "function_call") if body.get(k)}
        result = self._formatter(messages=body["messages"], **extra)
        return len(vocab.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True))


def _load_vocab(path: str) -> tuple[Any, Any]:
    """Tokenizer-only copy of the model plus its chat formatter (~0.1 s; no weights are loaded)."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    vocab = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False, n_ctx=8)
    template = vocab.metadata.get("tokenizer.chat_template")
    if not template:
        raise EngineFailed(f"{path}: GGUF has no tokenizer.chat_template; the llamacpp engine needs one for chat")
    model = vocab._model

    def text(token_id: int) -> str:
        return model.token_get_text(token_id) if token_id != -1 else ""

    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=text(vocab.token_eos()),
        bos_token=text(vocab.token_bos()),
        stop_token_ids=[vocab.token_eos()],
    )
    return vocab, formatter
