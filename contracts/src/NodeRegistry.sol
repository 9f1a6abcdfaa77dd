// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ModelRegistry} from "./ModelRegistry.sol";
import {NodeBook} from "./NodeBook.sol";
import {NodeIndex} from "./NodeIndex.sol";

/// @notice What JobMarket accepts from NodeRegistry: slashed stake (credited to verifiers or burned).
interface ISlashSink {
    function depositSlashed() external payable;
}

/// @title NodeRegistry
/// @notice Staking and the directory of nodes: each node serves blocks [start, end) of one model,
///         at a price, with advertised execution capabilities.
/// @dev Holds stake and node earnings (pull payments to each node's payout address, which the node
///      may change). Balance == sum(stake) + sum(earnings) at all times. Per model: an index of its
///      live nodes and one of its full nodes (span [0, numBlocks): the verifier pool), both O(1).
contract NodeRegistry is NodeBook {
    using NodeIndex for NodeIndex.Set;

    constructor(ModelRegistry models_, uint256 minStake_, uint256 unbondingPeriod_, uint256 slashAmount_)
        NodeBook(models_, minStake_, unbondingPeriod_, slashAmount_)
    {}

    // --------------------------------------------------------------- external
    /// @notice Wire the job market; callable once, by the deployer.
    function setJobMarket(address jobMarket_) external {
        if (msg.sender != _deployer || jobMarket != address(0) || jobMarket_ == address(0)) revert NodeBadSetup();
        jobMarket = jobMarket_;
        emit JobMarketSet(jobMarket_);
    }

    /// @notice Register msg.sender as a node serving blocks [start, end) of `modelId`, staking msg.value.
    /// @param price wei per block per output token the node asks (JobMarket enforces it)
    /// @param caps execution capabilities: 1 << dtype per dtype class (0 fp32, 1 bf16, 2 fp16), CAP_EXACT, CAP_INT8
    /// @dev Reputation and unwithdrawn earnings survive an exit and re-registration.
    function register(
        bytes32 modelId,
        uint16 start,
        uint16 end,
        string calldata endpoint,
        address payout,
        uint32 throughput,
        uint80 price,
        uint8 caps
    ) external payable {
        Node storage n = _nodes[msg.sender];
        if (n.status != STATUS_NONE && n.status != STATUS_EXITED) revert NodeAlreadyRegistered(msg.sender);
        if (msg.value < minStake) revert NodeStakeTooLow(msg.value, minStake);
        (uint16 numBlocks,) = models.liveModel(modelId);
        if (start >= end || end > numBlocks) revert NodeBadSpan(start, end, numBlocks);
        if (caps & 7 == 0 || caps & (CAP_EXACT | CAP_INT8) == 0 || caps >> 5 != 0) revert NodeBadCaps(caps);
        if (payout == address(0)) payout = msg.sender;
        n.stake = _toU96(msg.value);
        if (n.reputation == 0) n.reputation = REP_ONE;
        n.modelTag = bytes16(modelId);
        (n.start, n.end, n.status) = (start, end, STATUS_ACTIVE);
        (n.caps, n.price) = (caps, price);
        (n.payout, n.unbondAt, n.throughput) = (payout, 0, throughput);
        n.modelId = modelId;
        n.endpoint = endpoint;
        _byModel[modelId].add(msg.sender);
        if (start == 0 && end == numBlocks) _fullByModel[modelId].add(msg.sender);
        emit NodeRegistered(msg.sender, modelId, start, end, msg.value, endpoint, payout, throughput, price, caps);
    }

    /// @notice Add msg.value to msg.sender's stake (re-activates a node slashed below the minimum).
    function addStake() external payable {
        Node storage n = _live(msg.sender);
        if (n.status == STATUS_UNBONDING) revert NodeIsUnbonding(msg.sender, n.unbondAt);
        uint256 stake = n.stake + msg.value;
        n.stake = _toU96(stake);
        if (n.status == STATUS_UNDERSTAKED && stake >= minStake) n.status = STATUS_ACTIVE;
        emit NodeStakeAdded(msg.sender, msg.value, stake);
    }

    /// @notice Leave the active set now; stake becomes withdrawable after the unbonding period.
    function requestUnbond() external {
        Node storage n = _live(msg.sender);
        if (n.status == STATUS_UNBONDING) revert NodeIsUnbonding(msg.sender, n.unbondAt);
        uint256 unbondAt = block.timestamp + unbondingPeriod;
        n.unbondAt = uint32(unbondAt);
        n.status = STATUS_UNBONDING;
        emit NodeUnbondingRequested(msg.sender, unbondAt);
    }

    /// @notice Pay stake and earnings to `payout` from now on (address(0): the node itself).
    function setPayout(address payout) external {
        Node storage n = _nodes[msg.sender];
        if (n.status == STATUS_NONE) revert NodeUnknown(msg.sender);
        if (payout == address(0)) payout = msg.sender;
        n.payout = payout;
        emit NodePayoutChanged(msg.sender, payout);
    }

    /// @notice Pay an unbonded node's stake to its payout address. Anyone may trigger it.
    function withdrawStake(address node) external {
        Node storage n = _nodes[node];
        if (n.status != STATUS_UNBONDING) revert NodeNotUnbonding(node);
        if (block.timestamp < n.unbondAt) revert NodeStillBonded(node, n.unbondAt, block.timestamp);
        uint256 amount = n.stake;
        n.stake = 0;
        n.status = STATUS_EXITED;
        _byModel[n.modelId].remove(node);
        _fullByModel[n.modelId].remove(node);
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

    /// @notice Revert unless every hop names an active node of `modelId` serving the hop's span
    ///         with the job's dtype class and weights; return each hop node's price and the plan's
    ///         price weight: the sum over primaries of max(its price, its standby's price) x blocks.
    /// @param hops packed hop words (contracts/README.md); a standby word follows its primary
    function checkHops(bytes32 modelId, uint256[] calldata hops, uint8 dtype, uint8 weights)
        external
        view
        returns (uint256[] memory prices, uint256 weight)
    {
        uint8 needCaps = weights == 0 ? CAP_EXACT : CAP_EXACT | CAP_INT8;
        prices = new uint256[](hops.length);
        for (uint256 i; i < hops.length; ++i) {
            uint256 h = hops[i];
            uint256 price = _checkHop(modelId, h, dtype, weights, needCaps);
            prices[i] = price;
            // cannot overflow: price < 2^80, blocks < 2^16, < 2^9 words; a standby costs more than
            // its primary only by the difference (it serves the same blocks instead of it)
            unchecked {
                uint256 blocks = ((h >> 176) & 0xffff) - ((h >> 160) & 0xffff);
                if ((h >> 200) & 1 == 0) weight += price * blocks;
                else if (price > prices[i - 1]) weight += (price - prices[i - 1]) * blocks;
            }
        }
    }

    /// @notice Apply a job's outcome: pay, adjust reputation, slash. Only the job market.
    /// @dev msg.value must equal the sum paid. What it did is JobMarket's JobFinalized and
    ///      DisputeSettled, node by node (not repeated here: one record, less gas). Slashed stake is sent back to the job market, which
    ///      credits it to the verifiers who proved the fault or burns it.
    /// @param nodes one word per node, the address in bits 0-159 (JobMarket passes the plan's hop words)
    /// @param entries per node: wei paid (bits 0-95) | outcome (bits 192-199, OUTCOME_*)
    /// @return slashed wei of stake taken and sent to the job market, in total
    /// @return cuts wei of stake taken from each node (zero unless its outcome is OUTCOME_SLASH)
    function settle(uint256[] calldata nodes, uint256[] calldata entries)
        external
        payable
        onlyJobMarket
        returns (uint256 slashed, uint256[] memory cuts)
    {
        cuts = new uint256[](nodes.length);
        for (uint256 i; i < nodes.length; ++i) {
            uint256 e = entries[i];
            uint8 o = uint8(e >> 192);
            if (o == OUTCOME_NONE) continue;
            Node storage n = _nodes[address(uint160(nodes[i]))];
            if (o == OUTCOME_SUCCESS) {
                n.earnings = _toU96(n.earnings + uint96(e));
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
        if (slashed != 0) ISlashSink(msg.sender).depositSlashed{value: slashed}();
    }

    /// @notice The record of a node (zeroed fields if unknown).
    function getNode(address node) external view returns (Node memory) {
        return _nodes[node];
    }

    /// @notice How many live (active, unbonding or understaked) nodes serve a model.
    function nodeCount(bytes32 modelId) external view returns (uint256) {
        return _byModel[modelId].length();
    }

    /// @notice Live nodes [offset, offset + limit) of a model, with their records (order changes on exits).
    function nodesOf(bytes32 modelId, uint256 offset, uint256 limit)
        external
        view
        returns (address[] memory addrs, Node[] memory recs)
    {
        addrs = _byModel[modelId].page(offset, limit);
        recs = new Node[](addrs.length);
        for (uint256 i; i < addrs.length; ++i) recs[i] = _nodes[addrs[i]];
    }

    /// @notice How many live nodes serve all of a model (the verifier pool).
    function fullNodeCount(bytes32 modelId) external view returns (uint256) {
        return _fullByModel[modelId].length();
    }

    /// @notice Full nodes [offset, offset + limit) of a model.
    function fullNodesOf(bytes32 modelId, uint256 offset, uint256 limit) external view returns (address[] memory) {
        return _fullByModel[modelId].page(offset, limit);
    }

    /// @notice The i-th full node of a model, its status and capabilities (for verifier draws).
    function fullNodeAt(bytes32 modelId, uint256 i) external view returns (address node, uint8 status, uint8 caps) {
        node = _fullByModel[modelId].get(i);
        Node storage n = _nodes[node];
        return (node, n.status, n.caps);
    }

    // --------------------------------------------------------------- internal
    /// @dev One hop of checkHops: active, this model, the span, the spec (in this order); its price.
    ///      Reads the node's slot 1 once (modelTag, start, end, status, caps, price).
    function _checkHop(bytes32 modelId, uint256 h, uint8 dtype, uint8 weights, uint8 needCaps)
        internal
        view
        returns (uint256)
    {
        address node = address(uint160(h));
        Node storage n = _nodes[node];
        uint256 w;
        assembly {
            w := sload(add(n.slot, 1))
        }
        // slot 1 layout: modelTag bits 0-127, start 128-143, end 144-159, status 160-167, caps 168-175, price 176-255
        uint8 status = uint8(w >> 160);
        if (status != STATUS_ACTIVE) revert NodeNotActive(node, status);
        if (bytes16(uint128(w)) != bytes16(modelId)) revert NodeWrongModel(node, modelId, n.modelId);
        (uint16 start, uint16 end) = (uint16(w >> 128), uint16(w >> 144));
        if (start > uint16(h >> 160) || end < uint16(h >> 176)) {
            revert NodeSpanNotServed(node, uint16(h >> 160), uint16(h >> 176), start, end);
        }
        uint8 caps = uint8(w >> 168);
        if (caps & (1 << dtype) == 0 || caps & needCaps == 0) revert NodeSpecNotServed(node, dtype, weights, caps);
        return w >> 176;
    }

}
