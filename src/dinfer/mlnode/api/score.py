"""``POST /api/v1/score``: teacher-forced logprobs of an executor's output, for validators (design §4).

Body ``{model, prompt: [chat messages] | str, top_k: int ≤ 20}`` plus the output in exactly one of two forms:

- ``output_tokens: [int]``: the generated ids;
- ``output_text: str`` and ``claimed: [{token: str, logprob: float ≤ 0}]``: what llama.cpp's OpenAI server gives an
  executor (the full output text and, per generated token, its text and logprob). The scorer first recovers the
  ids (``LogprobScorer.align``); when no token sequence fits, the answer is a 400 whose message starts with
  ``"unaligned: "`` (a validator counts that as a failed validation).

→ ``{model, prompt_tokens, end_logprob, positions: [{token, text, logprob, top: [{token, text, logprob}]}]}``, plus
``output_tokens`` (the recovered ids) for the text form. ``end_logprob`` is the logprob of the most likely
end-of-generation token where the output ends: low for a truncated answer. The model this node serves is scored
with the GGUF it serves; another model id is resolved like ``inference/up`` resolves it (``models_dir`` / packaged
GGUF). Either is loaded lazily in-process (``mlnode.scoring``), and
aligned and scored in one worker-thread call. The engine queue is not involved: scoring never waits behind a
generation.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dinfer.config import format_validation_error
from dinfer.errors import InvalidRequest
from dinfer.mlnode.api.state import AppState, get_state
from dinfer.mlnode.engines.base import gguf_magic_ok
from dinfer.mlnode.models import resolve_model
from dinfer.mlnode.schemas import InferenceUpRequest
from dinfer.mlnode.scoring import MAX_OUTPUT_TOKENS, ScorerCache
from dinfer.openai_types import ChatMessage

router = APIRouter()
State = Annotated[AppState, Depends(get_state)]

MAX_TOP_K = 20
"""OpenAI's ``top_logprobs`` limit."""
MAX_TOKEN_TEXT = 256
"""Longest claimed token text, in characters (a token's piece is a few dozen bytes at most)."""
MAX_BODY_BYTES = 1 << 20
"""Largest request body: prompt text is bounded by the scorer's context anyway; this caps parsing work."""


class Claim(BaseModel):
    """One generated token as an OpenAI logprobs entry names it: its text and the executor's logprob."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(max_length=MAX_TOKEN_TEXT)
    logprob: float = Field(le=0.0, allow_inf_nan=False)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128)
    prompt: Annotated[list[ChatMessage], Field(min_length=1, max_length=1024)] | str
    output_tokens: list[int] | None = Field(None, min_length=1, max_length=MAX_OUTPUT_TOKENS)
    output_text: str | None = None
    claimed: list[Claim] | None = Field(None, min_length=1, max_length=MAX_OUTPUT_TOKENS)
    top_k: int = Field(5, ge=0, le=MAX_TOP_K)

    def check_output_form(self) -> None:
        """``InvalidRequest`` unless the output comes in exactly one form: ids, or text plus claims."""
        by_text = self.output_text is not None or self.claimed is not None
        if self.output_tokens is not None and by_text:
            raise InvalidRequest("invalid score request: give either output_tokens or output_text + claimed, not both")
        if self.output_tokens is None and not by_text:
            raise InvalidRequest("invalid score request: give the output: output_tokens, or output_text + claimed")
        if by_text and (self.output_text is None or self.claimed is None):
            raise InvalidRequest("invalid score request: output_text and claimed go together")


def get_scorers(request: Request) -> ScorerCache:
    """FastAPI dependency: the app's ``ScorerCache`` (created by ``create_app``)."""
    scorers: ScorerCache = request.app.state.scorers
    return scorers


@router.post("/api/v1/score")
async def score(
    request: Request, st: State, scorers: Annotated[ScorerCache, Depends(get_scorers)]
) -> dict[str, Any]:
    """Teacher-forced logprobs of ``output_tokens`` after ``prompt`` under ``model``."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequest(f"score body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        req = ScoreRequest.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"score body is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise InvalidRequest(f"invalid score request: {format_validation_error(exc)}") from None
    req.check_output_form()
    if st.settings.engine != "llamacpp":
        raise InvalidRequest(f"scoring needs a GGUF model (llamacpp engine); this ML node runs {st.settings.engine}")
    if ".." in req.model.split("/"):
        raise InvalidRequest(f"invalid model id {req.model!r}: '..' path segments are not allowed")
    try:
        up = InferenceUpRequest(model=req.model)
    except ValidationError as exc:
        raise InvalidRequest(f"invalid model id: {format_validation_error(exc)}") from None
    loaded = st.manager.loaded_spec
    # the model this node serves scores with the very GGUF it serves (an operator's model_path included)
    spec = loaded if loaded is not None and loaded.model_id == req.model else resolve_model(up, st.settings)
    if not gguf_magic_ok(Path(spec.source)):
        raise InvalidRequest(f"model {req.model!r}: {spec.source!r} is not a GGUF file")
    prompt: str | list[dict[str, Any]] = (
        req.prompt if isinstance(req.prompt, str) else [m.model_dump(exclude_none=True) for m in req.prompt]
    )
    scorer = scorers.get(spec.source)
    if req.output_tokens is not None:
        result = await asyncio.to_thread(scorer.score, prompt, req.output_tokens, req.top_k)
        return {"model": req.model, **result.as_dict()}
    claimed = [(c.token, c.logprob) for c in req.claimed or ()]
    text = req.output_text or ""
    ids, result = await asyncio.to_thread(scorer.align_and_score, prompt, text, claimed, req.top_k)
    return {"model": req.model, **result.as_dict(), "output_tokens": ids}
