"""Settings: TOML + env precedence, validation errors that name the key and the range."""

from __future__ import annotations

from pathlib import Path

import pytest

from dinfer.config import ProtocolParams, load_settings
from dinfer.errors import ConfigError


def test_defaults() -> None:
    s = load_settings()
    assert s.protocol.downtime_grace_blocks == 50
    assert s.protocol.missed_p0_bps == 1000 and s.protocol.missed_alpha_bps == 500
    assert s.node.public_port == 9000 and s.node.admin_bind == "127.0.0.1"


def test_toml_then_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\npublic_port = 9100\nadmin_port = 9300\n[protocol]\nexpiration_blocks = 33\n')
    monkeypatch.setenv("DINFER_NODE__PUBLIC_PORT", "9555")
    s = load_settings(path)
    assert s.node.public_port == 9555  # env beats the file
    assert s.node.admin_port == 9300
    assert s.protocol.expiration_blocks == 33


def test_error_names_key_and_range(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[protocol]\nslash_fraction_downtime_bps = 20000\n")
    with pytest.raises(ConfigError, match=r"protocol\.slash_fraction_downtime_bps: .*less than or equal to 10000"):
        load_settings(path)


def test_wrong_type_and_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[node]\npublic_port = "ninety"\nunknown_thing = 1\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "node.public_port" in str(info.value) and "node.unknown_thing" in str(info.value)


def test_env_error_names_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DINFER_PROTOCOL__MAX_DRAWS", "0")
    with pytest.raises(ConfigError, match=r"protocol\.max_draws"):
        load_settings()


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_rpc_urls_validated() -> None:
    with pytest.raises(ConfigError, match=r"chain\.rpc_urls"):
        load_settings(chain={"rpc_urls": ["ftp://x"]})
    with pytest.raises(ConfigError, match="at least one RPC URL"):
        load_settings(chain={"rpc_urls": []})


def test_protocol_param_ids_and_bounds() -> None:
    names = ProtocolParams.names()
    assert ProtocolParams.param_id("downtime_grace_blocks") == 0
    assert len(ProtocolParams.maxima()) == len(ProtocolParams.minima()) == len(names) <= 32
    assert all(lo <= v <= hi for lo, v, hi in zip(ProtocolParams.minima(), ProtocolParams().values(),
                                                    ProtocolParams.maxima(), strict=True))
    with pytest.raises(ConfigError, match="unknown protocol parameter"):
        ProtocolParams.param_id("nope")


def test_parameters_doc_is_current() -> None:
    """docs/parameters.md is generated from the field docstrings; regenerate with scripts/gen_parameters_doc.py."""
    import runpy

    root = Path(__file__).resolve().parents[2]
    render = runpy.run_path(str(root / "scripts" / "gen_parameters_doc.py"))["render"]
    doc = (root / "docs" / "parameters.md").read_text()
    assert doc == render(), "docs/parameters.md is stale: run .venv/bin/python scripts/gen_parameters_doc.py"
    for name in ProtocolParams.names():
        assert f"`{name}`" in doc
