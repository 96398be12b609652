"""ETH amounts typed by people → wei, exactly."""

from __future__ import annotations

import pytest

from dinfer.errors import ConfigError
from dinfer.units import eth_to_wei


def test_exact_conversion() -> None:
    assert eth_to_wei("1") == 10**18
    assert eth_to_wei("0.1") == 10**17  # no float rounding
    assert eth_to_wei(" 2.000000000000000001 ") == 2 * 10**18 + 1


@pytest.mark.parametrize("bad", ["abc", "", "-1", "0", "1e-19", "0.0000000000000000001"])
def test_refusals(bad: str) -> None:
    with pytest.raises(ConfigError):
        eth_to_wei(bad)
