# pragma version ~=0.4.3
"""
@title dinfer Registry
@notice Governance parameters, governance models, hosts and their collateral, ML nodes (hardware),
        and the ML-node version plan. The other dinfer contracts read parameters and models here and
        are the only callers allowed to slash.
@custom:security The owner is the governor (a multisig/timelock in production). Parameter changes wait
        `governance_delay_blocks` between proposal and application. Slashing is limited to addresses the
        owner registered with `set_slasher` (the Inference, Epochs and Sessions contracts).
@custom:kill No kill switch: parameters and ownership are the only levers.
"""

from interfaces import IRegistry

implements: IRegistry

MAX_PARAMS: constant(uint256) = 32
MAX_MODELS: constant(uint256) = 64
MAX_HOSTS: constant(uint256) = 1024
MAX_NODES_PER_HOST: constant(uint256) = 32
MAX_DIFF: constant(uint256) = 16
MAX_NODE_REFS: constant(uint256) = 1024
BPS: constant(uint256) = 10000

# Parameter ids used here; the order is ProtocolParams' field order in dinfer/config.py (tested).
PARAM_MIN_COLLATERAL: constant(uint256) = 18
PARAM_UNBONDING_BLOCKS: constant(uint256) = 19
PARAM_GOVERNANCE_DELAY: constant(uint256) = 21


struct PendingParam:
    value: uint256
    apply_block: uint256
    exists: bool


owner: public(address)
pending_owner: public(address)
treasury: public(address)
slashers: public(HashMap[address, bool])
slashed_balance: public(uint256)

param_count: public(uint256)
_params: HashMap[uint256, uint256]
_param_min: HashMap[uint256, uint256]
_param_max: HashMap[uint256, uint256]
pending_params: public(HashMap[uint256, PendingParam])

_models: HashMap[bytes32, IRegistry.Model]
_model_keys: DynArray[bytes32, MAX_MODELS]

_hosts: HashMap[address, IRegistry.Host]
is_host: public(HashMap[address, bool])
_host_list: DynArray[address, MAX_HOSTS]
_nodes: HashMap[address, DynArray[IRegistry.HardwareNode, MAX_NODES_PER_HOST]]
_node_slot: HashMap[address, HashMap[bytes32, uint256]]  # keccak(node_id) -> index + 1 (0 = absent): O(1) lookups

_version: String[32]
_planned_version: String[32]
_planned_height: uint256


@deploy
def __init__(
    initial_params: DynArray[uint256, MAX_PARAMS],
    param_min: DynArray[uint256, MAX_PARAMS],
    param_max: DynArray[uint256, MAX_PARAMS],
    initial_version: String[32],
    treasury: address,
):
    """
    @param initial_params Values in ProtocolParams order.
    @param param_min Lower bound of each parameter (same order).
    @param param_max Upper bound of each parameter (same order).
    @param initial_version ML-node version in force until the first upgrade plan.
    @param treasury Receiver of slashed collateral.
    """
    assert len(initial_params) == len(param_min) and len(initial_params) == len(param_max), "ParamLengthMismatch"
    assert len(initial_version) > 0, "EmptyVersion"
    assert treasury != empty(address), "ZeroAddress"
    self.owner = msg.sender
    self.treasury = treasury
    self.param_count = len(initial_params)
    for i: uint256 in range(MAX_PARAMS):
        if i >= len(initial_params):
            break
        assert param_min[i] <= initial_params[i] and initial_params[i] <= param_max[i], "ParamOutOfRange"
        self._params[i] = initial_params[i]
        self._param_min[i] = param_min[i]
        self._param_max[i] = param_max[i]
    self._version = initial_version


@internal
@view
def _check_owner():
    assert msg.sender == self.owner, "NotOwner"


@internal
@view
def _check_host():
    assert self.is_host[msg.sender], "NotHost"


# ---------------------------------------------------------------- governance

@view
@external
def param(param_id: uint256) -> uint256:
    """
    @notice Current value of a protocol parameter.
    @param param_id Id in ProtocolParams order.
    """
    assert param_id < self.param_count, "UnknownParam"
    return self._params[param_id]


@view
@external
def params() -> DynArray[uint256, MAX_PARAMS]:
    """
    @notice All parameter values in id order.
    """
    out: DynArray[uint256, MAX_PARAMS] = []
    for i: uint256 in range(MAX_PARAMS):
        if i >= self.param_count:
            break
        out.append(self._params[i])
    return out


@view
@external
def param_bounds(param_id: uint256) -> (uint256, uint256):
    """
    @notice Allowed (min, max) of a parameter.
    """
    assert param_id < self.param_count, "UnknownParam"
    return self._param_min[param_id], self._param_max[param_id]


@internal
def _apply_param(param_id: uint256, new_value: uint256):
    old: uint256 = self._params[param_id]
    self._params[param_id] = new_value
    self.pending_params[param_id] = empty(PendingParam)
    log IRegistry.ParamChanged(param_id=param_id, old_value=old, new_value=new_value)


@external
def propose_param(param_id: uint256, new_value: uint256):
    """
    @notice Propose a parameter change; applied at once when the governance delay is zero.
    @param param_id Id in ProtocolParams order.
    @param new_value New value within the parameter's bounds.
    """
    self._check_owner()
    assert param_id < self.param_count, "UnknownParam"
    assert self._param_min[param_id] <= new_value and new_value <= self._param_max[param_id], "ParamOutOfRange"
    delay: uint256 = self._params[PARAM_GOVERNANCE_DELAY]
    log IRegistry.ParamProposed(param_id=param_id, value=new_value, apply_block=block.number + delay)
    if delay == 0:
        self._apply_param(param_id, new_value)
    else:
        self.pending_params[param_id] = PendingParam(value=new_value, apply_block=block.number + delay, exists=True)


@external
def apply_param(param_id: uint256):
    """
    @notice Apply a proposed parameter once its delay has elapsed (anyone may call).
    """
    pending: PendingParam = self.pending_params[param_id]
    assert pending.exists, "NoPendingParam"
    assert block.number >= pending.apply_block, "GovernanceDelayNotElapsed"
    self._apply_param(param_id, pending.value)


@external
def transfer_ownership(new_owner: address):
    """
    @notice Start a two-step ownership transfer; `new_owner` must call `accept_ownership`.
    """
    self._check_owner()
    assert new_owner != empty(address), "ZeroAddress"
    self.pending_owner = new_owner
    log IRegistry.OwnershipTransferStarted(owner=self.owner, pending_owner=new_owner)


@external
def accept_ownership():
    """
    @notice Finish an ownership transfer.
    """
    assert msg.sender == self.pending_owner, "NotPendingOwner"
    previous: address = self.owner
    self.owner = msg.sender
    self.pending_owner = empty(address)
    log IRegistry.OwnershipTransferred(previous_owner=previous, new_owner=msg.sender)


@external
def set_slasher(slasher: address, allowed: bool):
    """
    @notice Allow or forbid a dinfer contract to call `slash`.
    """
    self._check_owner()
    assert slasher != empty(address), "ZeroAddress"
    self.slashers[slasher] = allowed
    log IRegistry.SlasherSet(slasher=slasher, allowed=allowed)


@external
def set_treasury(treasury: address):
    """
    @notice Change the receiver of slashed collateral.
    """
    self._check_owner()
    assert treasury != empty(address), "ZeroAddress"
    self.treasury = treasury
    log IRegistry.TreasurySet(treasury=treasury)


# ---------------------------------------------------------------- models

@internal
@view
def _model_key(model_id: String[64]) -> bytes32:
    return keccak256(model_id)


@internal
@view
def _check_model_fields(model: IRegistry.Model):
    assert len(model.id) > 0, "EmptyModelId"
    assert len(model.hf_repo) > 0, "EmptyHfRepo"
    assert model.throughput_per_nonce > 0, "ZeroThroughputPerNonce"
    assert model.units_of_compute_per_token > 0, "ZeroUnitsOfCompute"


@external
def register_model(model: IRegistry.Model):
    """
    @notice Add a governance model. Hosts may only list ML nodes serving governance models.
    @param model All fields; `id` is the name clients use (e.g. "HuggingFaceTB/SmolLM2-135M-Instruct").
    """
    self._check_owner()
    self._check_model_fields(model)
    key: bytes32 = self._model_key(model.id)
    assert len(self._models[key].id) == 0, "ModelExists"
    self._models[key] = model
    self._model_keys.append(key)
    log IRegistry.ModelRegistered(model_key=key, model_id=model.id, price_per_token=model.price_per_token)


@external
def update_model(model: IRegistry.Model):
    """
    @notice Change a governance model; running epochs keep their snapshot, the next epoch uses this.
    """
    self._check_owner()
    self._check_model_fields(model)
    key: bytes32 = self._model_key(model.id)
    assert len(self._models[key].id) > 0, "UnknownModel"
    self._models[key] = model
    log IRegistry.ModelUpdated(model_key=key, model_id=model.id, price_per_token=model.price_per_token)


@view
@external
def is_valid_governance_model(model_id: String[64]) -> bool:
    """
    @notice True when `model_id` is a registered governance model.
    """
    return len(self._models[self._model_key(model_id)].id) > 0


@view
@external
def get_governance_model(model_id: String[64]) -> IRegistry.Model:
    """
    @notice One governance model by id; reverts `UnknownModel`.
    """
    model: IRegistry.Model = self._models[self._model_key(model_id)]
    assert len(model.id) > 0, "UnknownModel"
    return model


@view
@external
def get_model_by_key(model_key: bytes32) -> IRegistry.Model:
    """
    @notice One governance model by `keccak256(id)`; reverts `UnknownModel`.
    """
    model: IRegistry.Model = self._models[model_key]
    assert len(model.id) > 0, "UnknownModel"
    return model


@view
@external
def get_governance_models() -> DynArray[IRegistry.Model, MAX_MODELS]:
    """
    @notice Every governance model in registration order.
    """
    out: DynArray[IRegistry.Model, MAX_MODELS] = []
    for key: bytes32 in self._model_keys:
        out.append(self._models[key])
    return out


# ---------------------------------------------------------------- hosts

@external
@payable
def register_host(url: String[256], metadata: String[2048]):
    """
    @notice Join as a host with collateral (msg.value >= min_collateral).
    @param url Public URL of the host node.
    @param metadata JSON: hardware, public keys, region (validated off chain by readers).
    """
    assert not self.is_host[msg.sender], "HostAlreadyRegistered"
    assert len(url) > 0, "EmptyUrl"
    assert msg.value > 0, "ZeroCollateral"
    assert msg.value >= self._params[PARAM_MIN_COLLATERAL], "InsufficientCollateral"
    self.is_host[msg.sender] = True
    self._hosts[msg.sender] = IRegistry.Host(
        url=url, metadata=metadata, collateral=msg.value, unbonding=0, unbonding_release_block=0,
        registered_block=block.number,
    )
    self._host_list.append(msg.sender)
    log IRegistry.HostRegistered(host=msg.sender, url=url, collateral=msg.value)


@external
def update_host(url: String[256], metadata: String[2048]):
    """
    @notice Change this host's URL and metadata.
    """
    self._check_host()
    assert len(url) > 0, "EmptyUrl"
    self._hosts[msg.sender].url = url
    self._hosts[msg.sender].metadata = metadata
    log IRegistry.HostUpdated(host=msg.sender, url=url)


@external
@payable
def add_collateral():
    """
    @notice Top up this host's collateral.
    """
    self._check_host()
    assert msg.value > 0, "ZeroAmount"
    self._hosts[msg.sender].collateral += msg.value
    log IRegistry.CollateralAdded(host=msg.sender, amount=msg.value, collateral=self._hosts[msg.sender].collateral)


@external
def request_unbond(amount: uint256):
    """
    @notice Move collateral to unbonding; it stays slashable until withdrawn after `unbonding_blocks`.
    """
    self._check_host()
    assert amount > 0, "ZeroAmount"
    assert amount <= self._hosts[msg.sender].collateral, "AmountExceedsCollateral"
    release: uint256 = block.number + self._params[PARAM_UNBONDING_BLOCKS]
    self._hosts[msg.sender].collateral -= amount
    self._hosts[msg.sender].unbonding += amount
    self._hosts[msg.sender].unbonding_release_block = release
    log IRegistry.UnbondRequested(host=msg.sender, amount=amount, release_block=release)


@external
@nonreentrant
def withdraw_unbonded():
    """
    @notice Withdraw unbonded collateral after the unbonding period.
    """
    # checks
    self._check_host()
    amount: uint256 = self._hosts[msg.sender].unbonding
    assert amount > 0, "NothingToWithdraw"
    assert block.number >= self._hosts[msg.sender].unbonding_release_block, "UnbondingNotElapsed"
    # effects
    self._hosts[msg.sender].unbonding = 0
    log IRegistry.UnbondedWithdrawn(host=msg.sender, amount=amount)
    # interactions
    send(msg.sender, amount)


@external
def slash(host: address, fraction_bps: uint256) -> uint256:
    """
    @notice Take `fraction_bps` of a host's bonded + unbonding collateral. Only dinfer contracts.
    @return The amount slashed (kept for the treasury).
    """
    assert self.slashers[msg.sender], "NotSlasher"
    assert fraction_bps <= BPS, "FractionAbove100Percent"
    assert self.is_host[host], "UnknownHost"
    bonded: uint256 = self._hosts[host].collateral
    unbonding: uint256 = self._hosts[host].unbonding
    amount: uint256 = (bonded + unbonding) * fraction_bps // BPS
    from_bonded: uint256 = min(amount, bonded)
    self._hosts[host].collateral = bonded - from_bonded
    self._hosts[host].unbonding = unbonding - (amount - from_bonded)
    self.slashed_balance += amount
    log IRegistry.HostSlashed(host=host, slasher=msg.sender, fraction_bps=fraction_bps, amount=amount)
    return amount


@external
@nonreentrant
def sweep_slashed():
    """
    @notice Send slashed collateral to the treasury (anyone may call).
    """
    amount: uint256 = self.slashed_balance
    assert amount > 0, "NothingToWithdraw"
    self.slashed_balance = 0
    log IRegistry.SlashedSentToTreasury(treasury=self.treasury, amount=amount)
    send(self.treasury, amount)


@view
@external
def get_host(host: address) -> IRegistry.Host:
    """
    @notice A host's record; reverts `UnknownHost`.
    """
    assert self.is_host[host], "UnknownHost"
    return self._hosts[host]


@view
@external
def get_hosts() -> DynArray[address, MAX_HOSTS]:
    """
    @notice Every registered host in registration order.
    """
    return self._host_list


@view
@external
def collateral_of(host: address) -> uint256:
    """
    @notice Bonded collateral (excludes unbonding).
    """
    return self._hosts[host].collateral


@view
@external
def is_active_host(host: address) -> bool:
    """
    @notice Registered with at least `min_collateral` bonded.
    """
    return self.is_host[host] and self._hosts[host].collateral >= self._params[PARAM_MIN_COLLATERAL]


# ---------------------------------------------------------------- ML nodes (hardware)

@external
def submit_hardware_diff(
    added: DynArray[IRegistry.HardwareNode, MAX_DIFF], removed: DynArray[String[64], MAX_DIFF]
):
    """
    @notice Add/update and remove this host's ML nodes in one call. Removals apply first.
    @param added Nodes to add or replace (matched by node_id); every model must be a governance model.
    @param removed node_ids to remove; each must exist.
    """
    self._check_host()
    for node_id: String[64] in removed:
        key: bytes32 = keccak256(node_id)
        slot: uint256 = self._node_slot[msg.sender][key]
        assert slot > 0, "UnknownNode"
        last: uint256 = len(self._nodes[msg.sender]) - 1
        if slot - 1 != last:
            moved: IRegistry.HardwareNode = self._nodes[msg.sender][last]
            self._nodes[msg.sender][slot - 1] = moved
            self._node_slot[msg.sender][keccak256(moved.node_id)] = slot
        self._nodes[msg.sender].pop()
        self._node_slot[msg.sender][key] = 0
        log IRegistry.HardwareNodeRemoved(host=msg.sender, node_id=node_id)
    for node: IRegistry.HardwareNode in added:
        assert len(node.node_id) > 0, "EmptyNodeId"
        assert len(node.models) > 0, "NodeWithoutModels"
        for model_id: String[64] in node.models:
            assert len(self._models[self._model_key(model_id)].id) > 0, "InvalidModel"
        key: bytes32 = keccak256(node.node_id)
        slot: uint256 = self._node_slot[msg.sender][key]
        if slot > 0:
            self._nodes[msg.sender][slot - 1] = node
        else:
            assert len(self._nodes[msg.sender]) < MAX_NODES_PER_HOST, "TooManyNodes"
            self._nodes[msg.sender].append(node)
            self._node_slot[msg.sender][key] = len(self._nodes[msg.sender])
        log IRegistry.HardwareNodeAdded(host=msg.sender, node_id=node.node_id, throughput=node.throughput)


@view
@external
def get_nodes(host: address) -> DynArray[IRegistry.HardwareNode, MAX_NODES_PER_HOST]:
    """
    @notice A host's ML nodes.
    """
    return self._nodes[host]


@view
@external
def get_nodes_for_model(model_id: String[64]) -> DynArray[IRegistry.NodeRef, MAX_NODE_REFS]:
    """
    @notice Every (host, node) serving `model_id`, hosts in registration order.
    """
    wanted: bytes32 = keccak256(model_id)
    out: DynArray[IRegistry.NodeRef, MAX_NODE_REFS] = []
    for host: address in self._host_list:
        for node: IRegistry.HardwareNode in self._nodes[host]:
            for m: String[64] in node.models:
                if keccak256(m) == wanted:
                    if len(out) < MAX_NODE_REFS:
                        out.append(IRegistry.NodeRef(host=host, node_id=node.node_id, throughput=node.throughput))
                    break
    return out


# ---------------------------------------------------------------- ML-node version plan

@internal
@view
def _plan_active() -> bool:
    return len(self._planned_version) > 0 and block.number >= self._planned_height


@view
@external
def current_mlnode_version() -> String[32]:
    """
    @notice Version in force at this block: a scheduled target becomes current at its height (no keeper).
    """
    if self._plan_active():
        return self._planned_version
    return self._version


@view
@external
def mlnode_upgrade_plan() -> (String[32], uint256):
    """
    @notice The pending (target_version, upgrade_height), or ("", 0) when none is pending.
    """
    if len(self._planned_version) == 0 or self._plan_active():
        return "", 0
    return self._planned_version, self._planned_height


@internal
def _materialize_plan():
    if self._plan_active():
        self._version = self._planned_version
        log IRegistry.MLNodeVersionActivated(version=self._planned_version, height=self._planned_height)
        self._planned_version = ""
        self._planned_height = 0


@external
def schedule_mlnode_upgrade(target_version: String[32], upgrade_height: uint256):
    """
    @notice Make `target_version` current at block `upgrade_height` (replaces a pending plan).
    """
    self._check_owner()
    assert len(target_version) > 0, "EmptyVersion"
    assert upgrade_height > block.number, "UpgradeHeightInPast"
    self._materialize_plan()
    self._planned_version = target_version
    self._planned_height = upgrade_height
    log IRegistry.MLNodeUpgradeScheduled(target_version=target_version, upgrade_height=upgrade_height)


@external
def cancel_mlnode_upgrade():
    """
    @notice Drop the pending plan before its height.
    """
    self._check_owner()
    assert len(self._planned_version) > 0, "NoUpgradePlanned"
    assert not self._plan_active(), "UpgradeAlreadyActive"
    log IRegistry.MLNodeUpgradeCancelled(target_version=self._planned_version, upgrade_height=self._planned_height)
    self._planned_version = ""
    self._planned_height = 0


@external
def activate_mlnode_upgrade():
    """
    @notice Record (and log) a plan whose height has passed; reading `current_mlnode_version` never needs this.
    """
    assert self._plan_active(), "NoActivatablePlan"
    self._materialize_plan()
