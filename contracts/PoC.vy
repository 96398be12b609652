# pragma version ~=0.4.3
"""
@title dinfer Proof of Compute
@notice PoC batches and their peer validation for the Epochs contract (design §4, docs/contracts.md). During a
        cycle's POC_GENERATE each host commits one batch per ML node (valid nonce count + Merkle root); during
        POC_VALIDATE other hosts report recomputed samples. A batch is valid unless more reports failed than passed
        (ties and unvalidated batches count as valid). Epochs reads `node_weight_for` when it forms the next groups.
@dev Split from Epochs so both stay under the EIP-170 code size limit; the stage clock and the epoch number are
     read from Epochs.
@custom:security No funds. Only active Registry hosts write; each (cycle, host, node) commits once and each
        validator reports once per batch. Counts are capped so no weight sum can overflow the group prefix sums.
@custom:kill No kill switch.
"""

from interfaces import IEpochs
from interfaces import IPoC
from interfaces import IRegistry

implements: IPoC

POC_GENERATE: constant(uint8) = 0
POC_VALIDATE: constant(uint8) = 1
MAX_BATCHES: constant(uint256) = 1024        # PoC batches per cycle
MAX_NODES_PER_HOST: constant(uint256) = 32   # Registry MAX_NODES_PER_HOST
MAX_NONCES: constant(uint256) = (1 << 40) - 1
MAX_NODE_WEIGHT: constant(uint256) = (1 << 80) - 1  # Epochs: 2^80 × 32768 nodes stays below its prefix limit
M64: constant(uint256) = (1 << 64) - 1
MODEL_ABI: constant(uint256) = 2720  # abi_encode(IRegistry.Model) at its largest
TPN_AT: constant(uint256) = 192      # byte offset of throughput_per_nonce in that encoding


# counters packed as nonce_count 64 | block 64 | passes 64 | fails 64 (low bits first)
struct BatchRec:
    host: address
    node_id: String[64]
    model_key: bytes32
    merkle_root: bytes32
    word: uint256


epochs: public(IEpochs)
registry: public(IRegistry)
batch_count: public(HashMap[uint256, uint256])  # poc_start → batches
_batches: HashMap[uint256, HashMap[uint256, BatchRec]]
_batch_index: HashMap[uint256, HashMap[bytes32, uint256]]  # keccak256(abi_encode(host, node_id)) → index + 1
_validated: HashMap[uint256, HashMap[bytes32, HashMap[address, bool]]]
_model_ids: HashMap[bytes32, String[64]]


@deploy
def __init__(epochs: IEpochs, registry: IRegistry):
    """
    @param epochs The Epochs contract (stage clock, epoch number).
    @param registry The Registry (hosts, ML nodes, models).
    """
    assert epochs.address != empty(address) and registry.address != empty(address), "ZeroAddress"
    self.epochs = epochs
    self.registry = registry


@internal
@view
def _cycle(stage: uint8) -> uint256:
    # the current cycle's poc_start when the clock is in `stage`
    h: uint256 = block.number
    poc_start: uint256 = staticcall self.epochs.poc_start_at(h)
    assert poc_start != 0 and staticcall self.epochs.stage_at(h) == stage, "WrongStage"
    return poc_start


@internal
@view
def _check_epoch_and_host(epoch: uint256):
    assert epoch == staticcall self.epochs.current_epoch() + 1, "WrongEpoch"
    assert staticcall self.registry.is_active_host(msg.sender), "NotHost"


@internal
@pure
def _batch_key(host: address, node_id: String[64]) -> bytes32:
    return keccak256(abi_encode(host, node_id))


@internal
@pure
def _weight(word: uint256, throughput_per_nonce: uint256) -> uint256:
    # valid unless fails > passes (ties and unvalidated batches count as valid)
    if (word >> 192) > ((word >> 128) & M64):
        return 0
    return min((word & M64) * throughput_per_nonce, MAX_NODE_WEIGHT)


@internal
@view
def _tpn(model_key: bytes32) -> uint256:
    # the Registry model's throughput_per_nonce (0 for an unknown model)
    ok: bool = False
    response: Bytes[MODEL_ABI] = b""
    ok, response = raw_call(
        self.registry.address, abi_encode(model_key, method_id=method_id("get_model_by_key(bytes32)")),
        max_outsize=MODEL_ABI, is_static_call=True, revert_on_failure=False,
    )
    if not ok or len(response) < TPN_AT + 32:
        return 0
    return convert(extract32(response, TPN_AT), uint256)


@external
def submit_poc_batch(epoch: uint256, node_id: String[64], model_id: String[64], nonce_count: uint256,
                     merkle_root: bytes32):
    """
    @notice Commit one ML node's PoC result for the next epoch during POC_GENERATE (one batch per node per cycle).
    @param epoch The epoch the PoC is for: Epochs.current_epoch + 1.
    @param node_id One of the caller's Registry ML nodes.
    @param model_id The model the node mined for (one it serves).
    @param nonce_count Valid nonces found (distance below r_target), at most 2^40 - 1.
    @param merkle_root dinfer.merkle root over the valid (nonce, distance) leaves in nonce order.
    """
    poc_start: uint256 = self._cycle(POC_GENERATE)
    self._check_epoch_and_host(epoch)
    model_key: bytes32 = keccak256(model_id)
    found: bool = False
    serves: bool = False
    nodes: DynArray[IRegistry.HardwareNode, MAX_NODES_PER_HOST] = staticcall self.registry.get_nodes(msg.sender)
    for node: IRegistry.HardwareNode in nodes:
        if node.node_id == node_id:
            found = True
            for m: String[64] in node.models:
                if keccak256(m) == model_key:
                    serves = True
            break
    assert found, "UnknownNode"
    assert serves, "ModelNotServed"
    assert nonce_count > 0, "ZeroCount"
    assert nonce_count <= MAX_NONCES, "CountTooLarge"
    batch_key: bytes32 = self._batch_key(msg.sender, node_id)
    assert self._batch_index[poc_start][batch_key] == 0, "DuplicateBatch"
    n: uint256 = self.batch_count[poc_start]
    assert n < MAX_BATCHES, "TooManyBatches"
    if len(self._model_ids[model_key]) == 0:
        self._model_ids[model_key] = model_id
    self._batches[poc_start][n] = BatchRec(
        host=msg.sender, node_id=node_id, model_key=model_key, merkle_root=merkle_root,
        word=nonce_count | (block.number << 64),
    )
    self._batch_index[poc_start][batch_key] = n + 1
    self.batch_count[poc_start] = n + 1
    log IPoC.PoCBatchSubmitted(
        poc_start=poc_start, host=msg.sender, epoch=epoch, node_id=node_id, model_id=model_id,
        nonce_count=nonce_count, merkle_root=merkle_root,
    )


@external
def submit_poc_validation(epoch: uint256, host: address, node_id: String[64], sampled_ok: uint256,
                          sampled_total: uint256):
    """
    @notice Report a recomputed sample of another host's batch during POC_VALIDATE; the report passes when every
            sampled nonce checked out.
    @param epoch Epochs.current_epoch + 1.
    @param host The batch's host (not the caller).
    @param node_id The batch's ML node.
    @param sampled_ok Sampled nonces that matched.
    @param sampled_total Nonces sampled (> 0).
    """
    poc_start: uint256 = self._cycle(POC_VALIDATE)
    self._check_epoch_and_host(epoch)
    assert msg.sender != host, "SelfValidation"
    batch_key: bytes32 = self._batch_key(host, node_id)
    index: uint256 = self._batch_index[poc_start][batch_key]
    assert index != 0, "UnknownBatch"
    assert sampled_total > 0 and sampled_ok <= sampled_total, "BadSample"
    assert not self._validated[poc_start][batch_key][msg.sender], "DuplicateValidation"
    self._validated[poc_start][batch_key][msg.sender] = True
    passed: bool = sampled_ok == sampled_total
    if passed:
        self._batches[poc_start][index - 1].word += 1 << 128
    else:
        self._batches[poc_start][index - 1].word += 1 << 192
    log IPoC.PoCValidated(
        poc_start=poc_start, host=host, validator=msg.sender, node_id=node_id, sampled_ok=sampled_ok,
        sampled_total=sampled_total, passed=passed,
    )


# ---------------------------------------------------------------- queries

@internal
@view
def _view(rec: BatchRec) -> IPoC.PoCBatch:
    return IPoC.PoCBatch(
        host=rec.host, node_id=rec.node_id, model_id=self._model_ids[rec.model_key], nonce_count=rec.word & M64,
        merkle_root=rec.merkle_root, block=(rec.word >> 64) & M64, passes=(rec.word >> 128) & M64,
        fails=rec.word >> 192,
    )


@view
@external
def get_poc_batches_for_node(poc_start: uint256, host: address, node_id: String[64]) -> DynArray[IPoC.PoCBatch, 1]:
    """
    @notice The batch of one ML node in the cycle starting at `poc_start` (empty when none).
    """
    out: DynArray[IPoC.PoCBatch, 1] = []
    index: uint256 = self._batch_index[poc_start][self._batch_key(host, node_id)]
    if index != 0:
        out.append(self._view(self._batches[poc_start][index - 1]))
    return out


@view
@external
def get_poc_batches_for_model(poc_start: uint256, model_id: String[64]) -> DynArray[IPoC.PoCBatch, MAX_BATCHES]:
    """
    @notice Every batch of the cycle that mined `model_id`, in submission order.
    """
    model_key: bytes32 = keccak256(model_id)
    out: DynArray[IPoC.PoCBatch, MAX_BATCHES] = []
    for i: uint256 in range(MAX_BATCHES):
        if i >= self.batch_count[poc_start]:
            break
        if self._batches[poc_start][i].model_key == model_key:
            out.append(self._view(self._batches[poc_start][i]))
    return out


@view
@external
def get_poc_batches(poc_start: uint256) -> DynArray[IPoC.PoCBatch, MAX_BATCHES]:
    """
    @notice Every batch of the cycle starting at `poc_start`, in submission order.
    """
    out: DynArray[IPoC.PoCBatch, MAX_BATCHES] = []
    for i: uint256 in range(MAX_BATCHES):
        if i >= self.batch_count[poc_start]:
            break
        out.append(self._view(self._batches[poc_start][i]))
    return out


@view
@external
def node_weight_for(
    poc_start: uint256, host: address, node_id: String[64], model_key: bytes32, throughput_per_nonce: uint256
) -> uint256:
    """
    @notice Weight of the node's batch when it is valid and mined `model_key` (else 0), at the given coefficient.
            Epochs passes the coefficient of the model it snapshots.
    """
    index: uint256 = self._batch_index[poc_start][self._batch_key(host, node_id)]
    if index == 0:
        return 0
    rec: BatchRec = self._batches[poc_start][index - 1]
    if rec.model_key != model_key:
        return 0
    return self._weight(rec.word, throughput_per_nonce)


@view
@external
def calculate_node_weight(poc_start: uint256, host: address, node_id: String[64]) -> uint256:
    """
    @notice nonce_count × the model's throughput_per_nonce when the node's batch is valid, else 0.
    """
    index: uint256 = self._batch_index[poc_start][self._batch_key(host, node_id)]
    if index == 0:
        return 0
    rec: BatchRec = self._batches[poc_start][index - 1]
    return self._weight(rec.word, self._tpn(rec.model_key))


@view
@external
def calculate_model_power(poc_start: uint256, model_id: String[64]) -> uint256:
    """
    @notice Sum of the node weights of the cycle's batches for `model_id`.
    """
    model_key: bytes32 = keccak256(model_id)
    tpn: uint256 = self._tpn(model_key)
    power: uint256 = 0
    for i: uint256 in range(MAX_BATCHES):
        if i >= self.batch_count[poc_start]:
            break
        if self._batches[poc_start][i].model_key == model_key:
            power += self._weight(self._batches[poc_start][i].word, tpn)
    return power
