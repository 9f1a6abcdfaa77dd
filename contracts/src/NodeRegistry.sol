// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ModelRegistry} from "./ModelRegistry.sol";

/// @notice What JobMarket accepts from NodeRegistry: slashed stake, credited to the job's requester.
interface ISlashSink {
    function depositSlashed() external payable;
}

/// @title NodeRegistry
/// @notice Staking and the directory of nodes: each node serves blocks [start, end) of one model.
/// @dev Holds stake and node earnings (pull payments to each node's payout address).
///      Balance == sum(stake) + sum(earnings) at all times.
contract NodeRegistry {
    // -------------------------------------------------------------- constants
    uint64 public constant REP_ONE = 1e18; // reputation fixed point: 1.0
    uint64 public constant REP_MIN = 1e17; // 0.1
    uint64 public constant REP_MAX = 1e19; // 10
    uint8 public constant OUTCOME_NONE = 0; // no change
    uint8 public constant OUTCOME_SUCCESS = 1; // paid, reputation x1.01
    uint8 public constant OUTCOME_FAILURE = 2; // reputation x0.8
    uint8 public constant OUTCOME_SLASH = 3; // reputation x0.8 and stake slashed
    uint8 public constant STATUS_NONE = 0;
    uint8 public constant STATUS_ACTIVE = 1;
    uint8 public constant STATUS_UNBONDING = 2;
    uint8 public constant STATUS_EXITED = 3;
    uint8 public constant STATUS_UNDERSTAKED = 4; // slashed below the minimum; add stake to return

    // ------------------------------------------------------------- immutables
    ModelRegistry public immutable models;
    uint256 public immutable minStake; // wei
    uint256 public immutable unbondingPeriod; // seconds
    uint256 public immutable slashAmount; // wei taken from a tail that committed and did not reveal
    address private immutable _deployer;

    // ---------------------------------------------------------------- storage
    struct Node {
        // slot 0: written on every settlement
        uint96 stake; // wei
        uint64 reputation; // fixed point, REP_ONE = 1.0
        uint96 earnings; // wei, withdrawable to `payout`
        // slot 1: the only slot read for each hop of each job
        bytes16 modelTag; // bytes16(modelId): 128 bits are collision-safe and save a read per hop
        uint16 start; // first block served
        uint16 end; // one past the last block served
        uint32 unbondAt; // unix seconds when stake becomes withdrawable
        uint8 status; // STATUS_*
        uint32 throughput; // block-tokens per second
        // slot 2
        address payout; // receives stake and earnings (may be a contract)
        uint96 price; // wei per block per output token
        // slot 3
        bytes32 modelId;
        string endpoint; // host:port of the node's gRPC service
    }

    address public jobMarket;
    mapping(address => Node) private _nodes;
    address[] private _list;
    mapping(address => uint256) private _indexPlusOne;

    // ----------------------------------------------------------------- events
    /// @notice A node registered (or re-registered after exiting).
    event NodeRegistered(
        address indexed node,
        bytes32 indexed modelId,
        uint16 start,
        uint16 end,
        uint256 stake,
        string endpoint,
        address payout,
        uint32 throughput,
        uint96 price
    );
    /// @notice Stake was added to a node.
    event NodeStakeAdded(address indexed node, uint256 amount, uint256 stake);
    /// @notice A node left the active set; its stake is withdrawable from `unbondAt`.
    event NodeUnbondingRequested(address indexed node, uint256 unbondAt);
    /// @notice A node's stake was paid to its payout address.
    event NodeStakeWithdrawn(address indexed node, address payout, uint256 amount);
    /// @notice A node's earnings were paid to its payout address.
    event NodeEarningsWithdrawn(address indexed node, address payout, uint256 amount);
    /// @notice The job market settled a job's nodes: `paid` wei of earnings credited, `slashed` wei
    ///         of stake taken in total.
    /// @dev Per-node amounts and outcomes are in JobMarket's JobFinalized (not repeated here, to save gas).
    event NodesSettled(uint256 indexed jobId, uint256 paid, uint256 slashed);
    /// @notice The job market address was set (once, at deployment).
    event JobMarketSet(address jobMarket);

    // ----------------------------------------------------------------- errors
    /// @notice Registration or stake top-up below the minimum stake.
    error NodeStakeTooLow(uint256 stake, uint256 minimum);
    /// @notice This address already has a live registration.
    error NodeAlreadyRegistered(address node);
    /// @notice This address has no live registration.
    error NodeUnknown(address node);
    /// @notice A span must satisfy start < end <= numBlocks.
    error NodeBadSpan(uint16 start, uint16 end, uint16 numBlocks);
    /// @notice The node is unbonding; it cannot stake or serve.
    error NodeIsUnbonding(address node, uint256 unbondAt);
    /// @notice Withdrawing stake needs an unbonding request first.
    error NodeNotUnbonding(address node);
    /// @notice The unbonding period has not passed yet.
    error NodeStillBonded(address node, uint256 unbondAt, uint256 nowTs);
    /// @notice There is nothing to withdraw.
    error NodeNothingToWithdraw(address node);
    /// @notice Only the job market may do this.
    error NodeOnlyJobMarket(address caller);
    /// @notice Paying a payout address failed.
    error NodeTransferFailed(address to, uint256 amount);
    /// @notice A plan names a node that is not active.
    error NodeNotActive(address node, uint8 status);
    /// @notice A plan names a node registered for another model.
    error NodeWrongModel(address node, bytes32 want, bytes32 has);
    /// @notice A plan gives a node a span it does not serve.
    error NodeSpanNotServed(address node, uint16 start, uint16 end, uint16 nodeStart, uint16 nodeEnd);
    /// @notice Deployment wiring error (job market set twice or by someone else).
    error NodeBadSetup();

    // -------------------------------------------------------------- modifiers
    modifier onlyJobMarket() {
        if (msg.sender != jobMarket) revert NodeOnlyJobMarket(msg.sender);
        _;
    }

    // ------------------------------------------------------------ constructor
    constructor(ModelRegistry models_, uint256 minStake_, uint256 unbondingPeriod_, uint256 slashAmount_) {
        models = models_;
        minStake = minStake_;
        unbondingPeriod = unbondingPeriod_;
        slashAmount = slashAmount_;
        _deployer = msg.sender;
    }

    // --------------------------------------------------------------- external
    /// @notice Wire the job market; callable once, by the deployer.
    function setJobMarket(address jobMarket_) external {
        if (msg.sender != _deployer || jobMarket != address(0) || jobMarket_ == address(0)) revert NodeBadSetup();
        jobMarket = jobMarket_;
        emit JobMarketSet(jobMarket_);
    }

    /// @notice Register msg.sender as a node serving blocks [start, end) of `modelId`, staking msg.value.
    /// @dev Reputation and unwithdrawn earnings survive an exit and re-registration.
    function register(
        bytes32 modelId,
        uint16 start,
        uint16 end,
        string calldata endpoint,
        address payout,
        uint32 throughput,
        uint96 price
    ) external payable {
        Node storage n = _nodes[msg.sender];
        if (n.status != STATUS_NONE && n.status != STATUS_EXITED) revert NodeAlreadyRegistered(msg.sender);
        if (msg.value < minStake) revert NodeStakeTooLow(msg.value, minStake);
        uint16 numBlocks = models.liveBlocks(modelId);
        if (start >= end || end > numBlocks) revert NodeBadSpan(start, end, numBlocks);
        if (payout == address(0)) payout = msg.sender;
        n.stake = _toU96(msg.value);
        if (n.reputation == 0) n.reputation = REP_ONE;
        n.modelId = modelId;
        n.modelTag = bytes16(modelId);
        n.payout = payout;
        n.start = start;
        n.end = end;
        n.unbondAt = 0;
        n.status = STATUS_ACTIVE;
        n.price = price;
        n.throughput = throughput;
        n.endpoint = endpoint;
        if (_indexPlusOne[msg.sender] == 0) {
            _list.push(msg.sender);
            _indexPlusOne[msg.sender] = _list.length;
        }
        emit NodeRegistered(msg.sender, modelId, start, end, msg.value, endpoint, payout, throughput, price);
    }

    /// @notice Add msg.value to msg.sender's stake (re-activates a node slashed below the minimum).
    function addStake() external payable {
        Node storage n = _nodes[msg.sender];
        if (n.status == STATUS_NONE || n.status == STATUS_EXITED) revert NodeUnknown(msg.sender);
        if (n.status == STATUS_UNBONDING) revert NodeIsUnbonding(msg.sender, n.unbondAt);
        uint256 stake = n.stake + msg.value;
        n.stake = _toU96(stake);
        if (n.status == STATUS_UNDERSTAKED && stake >= minStake) n.status = STATUS_ACTIVE;
        emit NodeStakeAdded(msg.sender, msg.value, stake);
    }

    /// @notice Leave the active set now; stake becomes withdrawable after the unbonding period.
    function requestUnbond() external {
        Node storage n = _nodes[msg.sender];
        if (n.status == STATUS_NONE || n.status == STATUS_EXITED) revert NodeUnknown(msg.sender);
        if (n.status == STATUS_UNBONDING) revert NodeIsUnbonding(msg.sender, n.unbondAt);
        uint256 unbondAt = block.timestamp + unbondingPeriod;
        n.unbondAt = uint32(unbondAt);
        n.status = STATUS_UNBONDING;
        emit NodeUnbondingRequested(msg.sender, unbondAt);
    }

    /// @notice Pay an unbonded node's stake to its payout address. Anyone may trigger it.
    function withdrawStake(address node) external {
        Node storage n = _nodes[node];
        if (n.status != STATUS_UNBONDING) revert NodeNotUnbonding(node);
        if (block.timestamp < n.unbondAt) revert NodeStillBonded(node, n.unbondAt, block.timestamp);
        uint256 amount = n.stake;
        n.stake = 0;
        n.status = STATUS_EXITED;
        emit NodeStakeWithdrawn(node, n.payout, amount);
        _pay(n.payout, amount);
    }

    /// @notice Pay a node's earnings to its payout address. Anyone may trigger it.
    function withdrawEarnings(address node) external {
        Node storage n = _nodes[node];
        uint256 amount = n.earnings;
        if (amount == 0) revert NodeNothingToWithdraw(node);
        n.earnings = 0;
        emit NodeEarningsWithdrawn(node, n.payout, amount);
        _pay(n.payout, amount);
    }

    /// @notice Revert unless every hop names an active node of `modelId` serving the hop's span.
    /// @param hops packed hops: node (bits 0-159), start (160-175), end (176-191)
    function checkHops(bytes32 modelId, uint256[] calldata hops) external view {
        for (uint256 i; i < hops.length; ++i) {
            uint256 h = hops[i];
            address node = address(uint160(h));
            uint16 start = uint16(h >> 160);
            uint16 end = uint16(h >> 176);
            Node storage n = _nodes[node];
            if (n.status != STATUS_ACTIVE) revert NodeNotActive(node, n.status);
            if (n.start > start || n.end < end) revert NodeSpanNotServed(node, start, end, n.start, n.end);
            if (n.modelTag != bytes16(modelId)) revert NodeWrongModel(node, modelId, n.modelId);
        }
    }

    /// @notice Apply a job's outcome: pay, adjust reputation, slash. Only the job market.
    /// @dev msg.value must equal sum(paid). Slashed stake is sent back to the job market,
    ///      which credits it to the job's requester.
    /// @return slashed wei of stake taken and sent to the job market, in total
    /// @return cuts wei of stake taken from each of `nodes` (zero unless its outcome is OUTCOME_SLASH)
    function settle(uint256 jobId, address[] calldata nodes, uint8[] calldata outcomes, uint256[] calldata paid)
        external
        payable
        onlyJobMarket
        returns (uint256 slashed, uint256[] memory cuts)
    {
        cuts = new uint256[](nodes.length);
        for (uint256 i; i < nodes.length; ++i) {
            uint8 o = outcomes[i];
            if (o == OUTCOME_NONE) continue;
            Node storage n = _nodes[nodes[i]];
            if (o == OUTCOME_SUCCESS) {
                n.earnings = _toU96(n.earnings + paid[i]);
                uint256 r = (uint256(n.reputation) * 101) / 100;
                n.reputation = r > REP_MAX ? REP_MAX : uint64(r);
            } else {
                uint256 r = (uint256(n.reputation) * 8) / 10;
                n.reputation = r < REP_MIN ? REP_MIN : uint64(r);
                if (o == OUTCOME_SLASH) {
                    uint256 cut = n.stake < slashAmount ? n.stake : slashAmount;
                    // cannot underflow: cut <= n.stake
                    unchecked {
                        n.stake -= uint96(cut);
                    }
                    cuts[i] = cut;
                    slashed += cut;
                    if (n.status == STATUS_ACTIVE && n.stake < minStake) n.status = STATUS_UNDERSTAKED;
                }
            }
        }
        emit NodesSettled(jobId, msg.value, slashed);
        if (slashed != 0) ISlashSink(msg.sender).depositSlashed{value: slashed}();
    }

    /// @notice The record of a node (zeroed fields if unknown).
    function getNode(address node) external view returns (Node memory) {
        return _nodes[node];
    }

    /// @notice Every address that ever registered, in registration order.
    function nodeAddresses() external view returns (address[] memory) {
        return _list;
    }

    /// @notice Live (active or unbonding or understaked) nodes of a model, with their records.
    function nodesOf(bytes32 modelId) external view returns (address[] memory addrs, Node[] memory recs) {
        uint256 count;
        for (uint256 i; i < _list.length; ++i) {
            Node storage n = _nodes[_list[i]];
            if (n.modelId == modelId && n.status != STATUS_EXITED) ++count;
        }
        addrs = new address[](count);
        recs = new Node[](count);
        uint256 k;
        for (uint256 i; i < _list.length; ++i) {
            Node storage n = _nodes[_list[i]];
            if (n.modelId == modelId && n.status != STATUS_EXITED) {
                addrs[k] = _list[i];
                recs[k] = n;
                ++k;
            }
        }
    }

    // --------------------------------------------------------------- internal
    function _pay(address to, uint256 amount) internal {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert NodeTransferFailed(to, amount);
    }

    function _toU96(uint256 x) internal pure returns (uint96) {
        require(x <= type(uint96).max, "uint96 overflow");
        return uint96(x);
    }
}
