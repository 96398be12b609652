# pragma version ~=0.4.3
"""
@title Packed record word of Inference: one storage word per inference
@notice A record costs one fresh SSTORE at start and one dirty update at finish: the client, the TA and the
        model are small indices, the executor is its index in the epoch group, the price lives in the epoch's
        per-model snapshot and amounts are tokens × price.
@custom:security Pure functions only; no storage.
"""

# record word, low bits first:
# client 32 | executor index 24 | ta 32 | model 16 | epoch 32 | block 40 | status 4 | reassigned 1 | spare 3 |
# reserved tokens 24 | prompt tokens 24 | completion tokens 24
# block: the (re)start block while STARTED, the finish block once FINISHED (the validation window's anchor)
M16: constant(uint256) = 65535
M24: constant(uint256) = 16777215
M32: constant(uint256) = 4294967295
M40: constant(uint256) = 1099511627775


@internal
@pure
def pack(client: uint256, executor_index: uint256, ta: uint256, model: uint256, epoch: uint256,
         start_block: uint256, status: uint256, reserved_tokens: uint256) -> uint256:
    return (client | (executor_index << 32) | (ta << 56) | (model << 88) | (epoch << 104)
            | (start_block << 136) | (status << 176) | (reserved_tokens << 184))


@internal
@pure
def client(word: uint256) -> uint256:
    return word & M32


@internal
@pure
def executor_index(word: uint256) -> uint256:
    return (word >> 32) & M24


@internal
@pure
def ta(word: uint256) -> uint256:
    return (word >> 56) & M32


@internal
@pure
def model(word: uint256) -> uint256:
    return (word >> 88) & M16


@internal
@pure
def epoch(word: uint256) -> uint256:
    return (word >> 104) & M32


@internal
@pure
def start_block(word: uint256) -> uint256:
    return (word >> 136) & M40


@internal
@pure
def status(word: uint256) -> uint256:
    return (word >> 176) & 15


@internal
@pure
def reassigned(word: uint256) -> bool:
    return (word >> 180) & 1 == 1


@internal
@pure
def reserved_tokens(word: uint256) -> uint256:
    return (word >> 184) & M24


@internal
@pure
def prompt_tokens(word: uint256) -> uint256:
    return (word >> 208) & M24


@internal
@pure
def completion_tokens(word: uint256) -> uint256:
    return (word >> 232) & M24


@internal
@pure
def with_status(word: uint256, status: uint256) -> uint256:
    return (word & ~(15 << 176)) | (status << 176)


@internal
@pure
def with_finish(word: uint256, status: uint256, executor_index: uint256, prompt: uint256,
                completion: uint256, finish_block: uint256) -> uint256:
    # the block field switches from the (re)start block to the finish block: the validation window's anchor
    cleared: uint256 = word & ~((15 << 176) | (M24 << 32) | (M40 << 136) | (M24 << 208) | (M24 << 232))
    return (cleared | (status << 176) | (executor_index << 32) | (finish_block << 136) | (prompt << 208)
            | (completion << 232))


@internal
@pure
def with_reassign(word: uint256, executor_index: uint256, start_block: uint256) -> uint256:
    cleared: uint256 = word & ~((M24 << 32) | (M40 << 136))
    return cleared | (executor_index << 32) | (start_block << 136) | (1 << 180)
