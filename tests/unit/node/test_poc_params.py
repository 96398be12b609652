"""Pure pieces of the epoch orchestration: kernel size per model, engine-arg merging, a node's epoch model."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dinfer.devnet import with_params
from dinfer.errors import ConfigError
from dinfer.genesis import load_genesis
from dinfer.mlnode.poc import PoCKernel, params_for_model
from dinfer.node.epoch_models import merge_model_args, pick_model
from dinfer.node.poc_validator import sample_indices


def test_genesis_models_get_small_kernels() -> None:
    by_tpn = {m.throughput_per_nonce: params_for_model(m.throughput_per_nonce) for m in load_genesis().models}
    assert by_tpn[100].dim == 32 and by_tpn[1000].dim == 96
    assert all(p.seq_len == 8 and p.n_heads == 4 and p.ffn_mult == 4 for p in by_tpn.values())


def test_kernel_work_grows_with_throughput_per_nonce_and_is_clamped() -> None:
    dims = [params_for_model(t).dim for t in (1, 25, 100, 400, 1000, 10_000, 10**6, 10**12)]
    assert dims == sorted(dims)
    assert dims[0] == 16 and dims[-1] == 2048
    assert all(d % 4 == 0 for d in dims)
    # dim² tracks throughput_per_nonce: 10× the coefficient is ~10× the matrix work.
    ratio = params_for_model(10_000).dim ** 2 / params_for_model(1000).dim ** 2
    assert 8 <= ratio <= 14


@pytest.mark.parametrize("bad", [0, -5])
def test_throughput_per_nonce_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="throughput_per_nonce"):
        params_for_model(bad)


def test_largest_genesis_kernel_does_a_thousand_nonces_per_second() -> None:
    kernel = PoCKernel(b"\x01" * 32, "0x" + "ab" * 20, params_for_model(1000))
    kernel.distances(np.arange(64, dtype=np.uint64))  # warm-up
    t0 = time.perf_counter()
    kernel.distances(np.arange(1024, dtype=np.uint64))
    assert 1024 / (time.perf_counter() - t0) > 500  # ~2000/s on one busy core; bound loose for shared CI


def test_local_args_override_per_flag_and_append_new_flags() -> None:
    merged = merge_model_args(["--n_ctx", "2048", "--seed", "1"], ["--n_ctx", "4096", "--n_threads", "2"])
    assert merged == ["--n_ctx", "4096", "--seed", "1", "--n_threads", "2"]
    assert merge_model_args(["--n_ctx", "512"], []) == ["--n_ctx", "512"]
    assert merge_model_args([], ["--flash"]) == ["--flash"]
    assert merge_model_args(["--flash", "--n_ctx", "1"], ["--n_ctx", "2"]) == ["--flash", "--n_ctx", "2"]


def test_epoch_model_prefers_weight_then_mined_then_registered() -> None:
    models = ["a", "b", "c"]
    assert pick_model("n1", models, {"b": {"n1"}}, "a", ["c"]) == ("b", "weighted")
    assert pick_model("n1", models, {"b": {"n2"}}, "a", ["c"]) == ("a", "mined")
    assert pick_model("n1", models, {}, "zzz", ["x", "c"]) == ("c", "registered")
    assert pick_model("n1", models, {}, None, ["x"]) is None


def test_sample_is_deterministic_per_validator_and_batch() -> None:
    seed, host, v1, v2 = b"\x05" * 32, "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20
    a = sample_indices(1000, 16, seed, v1, host, "n1")
    assert a == sample_indices(1000, 16, seed, v1, host, "n1")
    assert len(a) == 16 and a == sorted(set(a)) and all(0 <= i < 1000 for i in a)
    assert a != sample_indices(1000, 16, seed, v2, host, "n1")
    assert a != sample_indices(1000, 16, seed, v1, host, "n2")
    assert sample_indices(3, 16, seed, v1, host, "n1") == [0, 1, 2]


def test_devnet_params_override_the_genesis_and_are_validated() -> None:
    genesis = load_genesis()
    long = with_params(genesis, {"epoch_length_blocks": 100_000})
    assert long.params.epoch_length_blocks == 100_000
    assert long.params.poc_generate_blocks == genesis.params.poc_generate_blocks
    assert with_params(genesis, {}) is genesis
    with pytest.raises(ConfigError, match=r"devnet\.params\.epoch_length_blocks"):
        with_params(genesis, {"epoch_length_blocks": 1})
    with pytest.raises(ConfigError, match="no_such_param"):
        with_params(genesis, {"no_such_param": 1})
