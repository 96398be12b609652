"""``POST /api/v1/score``: teacher-forced logprobs of an executor's output, for validators (design §4).

Body ``{model, prompt: [chat messages] | str, output_tokens: [int], top_k: int ≤ 20}`` → ``{model, prompt_tokens,
positions: [{token, text, logprob, top: [{token, text, logprob}]}]}``. The model is resolved like
``inference/up`` resolves it (``models_dir`` / packaged GGUF), loaded lazily in-process (``mlnode.scoring``), and
scored in a worker thread. The engine queue is not involved: scoring never waits behind a generation.
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
from dinfer.mlnode.scoring import ScorerCache
from dinfer.openai_types import ChatMessage

router = APIRouter()
State = Annotated[AppState, Depends(get_state)]

MAX_TOP_K = 20
"""OpenAI's ``top_logprobs`` limit."""
MAX_OUTPUT_TOKENS = 4096
MAX_BODY_BYTES = 1 << 20
"""Largest request body: prompt text is bounded by the scorer's context anyway; this caps parsing work."""


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128)
    prompt: Annotated[list[ChatMessage], Field(min_length=1, max_length=1024)] | str
    output_tokens: list[int] = Field(min_length=1, max_length=MAX_OUTPUT_TOKENS)
    top_k: int = Field(5, ge=0, le=MAX_TOP_K)


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
    if st.settings.engine != "llamacpp":
        raise InvalidRequest(f"scoring needs a GGUF model (llamacpp engine); this ML node runs {st.settings.engine}")
    if ".." in req.model.split("/"):
        raise InvalidRequest(f"invalid model id {req.model!r}: '..' path segments are not allowed")
    try:
        up = InferenceUpRequest(model=req.model)
    except ValidationError as exc:
        raise InvalidRequest(f"invalid model id: {format_validation_error(exc)}") from None
    spec = resolve_model(up, st.settings)
    if not gguf_magic_ok(Path(spec.source)):
        raise InvalidRequest(f"model {req.model!r}: {spec.source!r} is not a GGUF file")
    prompt: str | list[dict[str, Any]] = (
        req.prompt if isinstance(req.prompt, str) else [m.model_dump(exclude_none=True) for m in req.prompt]
    )
    scorer = scorers.get(spec.source)
    result = await asyncio.to_thread(scorer.score, prompt, req.output_tokens, req.top_k)
    return {"model": req.model, **result.as_dict()}
