// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ModelRegistry} from "./ModelRegistry.sol";
import {NodeIndex} from "./NodeIndex.sol";

/// @title NodeBook
/// @notice NodeRegistry's definitions and storage: the node record, the per-model indexes, events,
///         errors and the small helpers its functions share.
abstract contract NodeBook {

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
    uint8 public constant CAP_EXACT = 1 << 3; // runs exact (fp32) weights; bits 0-2: dtype classes
    uint8 public constant CAP_INT8 = 1 << 4; // runs int8-mixed weights

    // ------------------------------------------------------------- immutables
    ModelRegistry public immutable models;
    uint256 public immutable minStake; // wei
    uint256 public immutable unbondingPeriod; // seconds
    uint256 public immutable slashAmount; // wei taken from a node with evidence against it
    address internal immutable _deployer;

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
        uint8 status; // STATUS_*
        uint8 caps; // CAP_* and 1 << dtype per dtype class run
        uint80 price; // wei per block per output token
        // slot 2
        address payout; // receives stake and earnings (may be a contract); the node may change it
        uint32 unbondAt; // unix seconds when stake becomes withdrawable
        uint32 throughput; // block-tokens per second
        // slot 3
        bytes32 modelId;
        string endpoint; // host:port of the node's gRPC service
    }

    address public jobMarket;
    mapping(address => Node) internal _nodes;
    mapping(bytes32 => NodeIndex.Set) internal _byModel; // live (not exited) nodes per model
    mapping(bytes32 => NodeIndex.Set) internal _fullByModel; // live full nodes per model

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
        uint80 price,
        uint8 caps
    );
    /// @notice Stake was added to a node.
    event NodeStakeAdded(address indexed node, uint256 amount, uint256 stake);
    /// @notice A node left the active set; its stake is withdrawable from `unbondAt`.
    event NodeUnbondingRequested(address indexed node, uint256 unbondAt);
    /// @notice A node's stake was paid to its payout address; it left the directory.
    event NodeStakeWithdrawn(address indexed node, address payout, uint256 amount);
    /// @notice A node's earnings were paid to its payout address.
    event NodeEarningsWithdrawn(address indexed node, address payout, uint256 amount);
    /// @notice A node changed where its stake and earnings are paid.
    event NodePayoutChanged(address indexed node, address payout);
    /// @notice The job market address was set (once, at deployment).
    event JobMarketSet(address jobMarket);

    // ----------------------------------------------------------------- errors
    /// @notice Registration below the minimum stake.
    error NodeStakeTooLow(uint256 stake, uint256 minimum);
    /// @notice This address already has a live registration.
    error NodeAlreadyRegistered(address node);
    /// @notice This address has no live registration.
    error NodeUnknown(address node);
    /// @notice A span must satisfy start < end <= numBlocks.
    error NodeBadSpan(uint16 start, uint16 end, uint16 numBlocks);
    /// @notice Capabilities need a dtype bit (0-2) and a weights bit (3-4), and nothing above bit 4.
    error NodeBadCaps(uint8 caps);
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
    /// @notice Paying a payout address failed; the node may set another with setPayout.
    error NodeTransferFailed(address to, uint256 amount);
    /// @notice A plan names a node that is not active.
    error NodeNotActive(address node, uint8 status);
    /// @notice A plan names a node registered for another model.
    error NodeWrongModel(address node, bytes32 want, bytes32 has);
    /// @notice A plan gives a node a span it does not serve.
    error NodeSpanNotServed(address node, uint16 start, uint16 end, uint16 nodeStart, uint16 nodeEnd);
    /// @notice A plan names a node that does not run the job's dtype class or weights.
    error NodeSpecNotServed(address node, uint8 dtype, uint8 weights, uint8 caps);
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

    // --------------------------------------------------------------- internal
    function _live(address node) internal view returns (Node storage n) {
        n = _nodes[node];
        if (n.status == STATUS_NONE || n.status == STATUS_EXITED) revert NodeUnknown(node);
    }

    function _pay(address to, uint256 amount) internal {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert NodeTransferFailed(to, amount);
    }

    function _toU96(uint256 x) internal pure returns (uint96) {
        require(x <= type(uint96).max, "uint96 overflow");
        return uint96(x);
    }
}
