// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ModelRegistry} from "./ModelRegistry.sol";
import {NodeRegistry, ISlashSink} from "./NodeRegistry.sol";
import {JobPlan} from "./JobPlan.sol";

/// @title JobMarket
/// @notice Escrowed inference jobs run by R node-disjoint replicas, settled by strict majority.
/// @dev Only a hash of the plan is stored; the plan travels in JobSubmitted and is passed back
///      as calldata to `commit` and `finalize`. A hop is one word: node (bits 0-159),
///      start (160-175), end (176-191), replica index (192-199). Hops are grouped by replica
///      in order 0..R-1, each replica's hops in block order.
///      Codec ids: 0 fp32, 1 fp16, 2 bf16, 3 int8-absmax, 4 int8-outlier, 5 int8-dynamic.
///      Balance == open escrow + unwithdrawn credits at all times.
contract JobMarket is ISlashSink {
    // -------------------------------------------------------------- constants
    uint256 public constant MAX_REPLICAS = 8; // = JobPlan.MAX_REPLICAS (replica bitmasks are uint8)
    uint8 private constant OPEN = 1;
    uint8 private constant FINALIZED = 2;

    // ------------------------------------------------------------- immutables
    ModelRegistry public immutable models;
    NodeRegistry public immutable nodes;
    uint256 public immutable maxJobDuration; // seconds, commit + reveal window

    // ---------------------------------------------------------------- storage
    struct Job {
        // slot 0: read and written by commit and reveal
        address requester;
        uint32 commitDeadline; // unix seconds, inclusive
        uint32 revealDeadline; // unix seconds, inclusive
        uint8 numReplicas;
        uint8 status; // 0 none, 1 open, 2 finalized
        uint8 committedMask; // bit r: replica r's tail committed
        uint8 revealedMask; // bit r: replica r's tail revealed
        // slot 1
        bytes32 termsHash; // keccak256(abi.encodePacked(modelId, fee, hops)); fee is in escrow while open
    }

    /// @notice What a requester asks for, besides the model and the plan.
    struct JobParams {
        bytes input; // inline input bytes (empty if inputHash/inputUri point off chain)
        bytes32 inputHash; // keccak256 of off-chain input (or zero)
        string inputUri; // where off-chain input lives (or empty)
        uint32 maxTokens; // output tokens to generate (1 for a classifier)
        uint32 temperatureMilli; // temperature x1000; 0 is greedy
        uint256 seed; // sampling seed, see proto/types.py
        uint8 codec; // activation codec id (contract notes)
        uint32 commitWindow; // seconds from submission until commits close
        uint32 revealWindow; // seconds after the commit deadline until reveals close
    }

    uint256 public nextJobId = 1;
    mapping(uint256 => Job) private _jobs;
    /// @dev commitment of replica r; replaced by the output hash once revealed
    mapping(uint256 => mapping(uint256 => bytes32)) private _replicaHash;
    mapping(address => uint256) private _credits;

    // ----------------------------------------------------------------- events
    /// @notice A job was submitted. Everything a worker needs is here.
    event JobSubmitted(
        uint256 indexed jobId,
        address indexed requester,
        bytes32 indexed modelId,
        uint256 fee,
        uint256[] hops,
        JobParams params,
        uint32 commitDeadline,
        uint32 revealDeadline
    );
    /// @notice A replica's tail committed to an output.
    event JobCommitted(uint256 indexed jobId, uint256 indexed replica, bytes32 commitment);
    /// @notice A replica's tail revealed its output.
    event JobRevealed(uint256 indexed jobId, uint256 indexed replica, bytes32 outputHash, bytes output);
    /// @notice A job was settled: the majority, if any, and what happened to each hop of the plan.
    ///         This is the one record of who was credited what; clients read it, never recompute it.
    /// @param outcome 1 majority, 2 no majority (the fee is refunded)
    /// @param outputHash the majority's output hash (zero without a majority)
    /// @param winnersMask bit r set: replica r revealed the majority's output
    /// @param refund wei of the fee credited back to the requester (the sum of `slashed` is credited too)
    /// @param nodes the node of each hop, in the plan's order (a node appears at most once in a plan)
    /// @param outcomes per hop: 0 none, 1 paid (reputation up), 2 failed (revealed a losing output,
    ///        reputation down), 3 slashed (its tail committed and did not reveal; reputation down)
    /// @param paid per hop: wei credited to the node's earnings, the integer-division dust included
    /// @param slashed per hop: wei of stake taken from the node and credited to the requester
    event JobFinalized(
        uint256 indexed jobId,
        uint8 outcome,
        bytes32 outputHash,
        uint8 winnersMask,
        uint256 refund,
        address[] nodes,
        uint8[] outcomes,
        uint256[] paid,
        uint256[] slashed
    );
    /// @notice Credits (refunds, slashed stake) were paid out.
    event CreditsWithdrawn(address indexed account, uint256 amount);

    // ----------------------------------------------------------------- errors
    /// @notice A job needs a fee, max tokens >= 1 and input (bytes or hash).
    error JobBadRequest(string reason);
    /// @notice Windows must be > 0 and sum to at most maxJobDuration seconds.
    error JobBadWindows(uint32 commitWindow, uint32 revealWindow, uint256 maxJobDuration);
    /// @notice No open or finalized job has this id.
    error JobUnknown(uint256 jobId);
    /// @notice The plan passed does not hash to the job's plan hash.
    error JobPlanMismatch(uint256 jobId);
    /// @notice Replica index out of range.
    error JobBadReplica(uint256 jobId, uint256 replica, uint256 numReplicas);
    /// @notice Only the tail (last hop) of the replica may commit.
    error JobNotTail(uint256 jobId, uint256 replica, address caller, address tail);
    /// @notice Commits are closed (deadline passed or reveals started).
    error JobCommitClosed(uint256 jobId, uint256 commitDeadline, uint256 nowTs);
    /// @notice The replica already committed or revealed.
    error JobAlreadyCommitted(uint256 jobId, uint256 replica);
    /// @notice The replica already revealed.
    error JobAlreadyRevealed(uint256 jobId, uint256 replica);
    /// @notice Reveals open when every replica committed or the commit deadline passed.
    error JobRevealNotOpen(uint256 jobId, uint256 commitDeadline, uint256 nowTs);
    /// @notice The reveal deadline passed.
    error JobRevealClosed(uint256 jobId, uint256 revealDeadline, uint256 nowTs);
    /// @notice The replica never committed.
    error JobNotCommitted(uint256 jobId, uint256 replica);
    /// @notice Output and salt (from this sender) do not match the commitment.
    error JobBadReveal(uint256 jobId, uint256 replica);
    /// @notice Finalize needs every replica revealed or the reveal deadline passed.
    error JobNotFinalizable(uint256 jobId, uint256 revealDeadline, uint256 nowTs);
    /// @notice The job was already finalized.
    error JobAlreadyFinalized(uint256 jobId);
    /// @notice This account has no credits.
    error JobNothingToWithdraw(address account);
    /// @notice Paying an account failed.
    error JobTransferFailed(address to, uint256 amount);
    /// @notice Only the node registry sends slashed stake.
    error JobOnlyNodeRegistry(address caller);

    // ------------------------------------------------------------ constructor
    constructor(ModelRegistry models_, NodeRegistry nodes_, uint256 maxJobDuration_) {
        require(nodes_.unbondingPeriod() >= maxJobDuration_, "unbonding shorter than a job");
        models = models_;
        nodes = nodes_;
        maxJobDuration = maxJobDuration_;
    }

    // --------------------------------------------------------------- external
    /// @notice Escrow msg.value and open a job.
    /// @param hops the plan, packed as described in the contract's notes
    /// @return jobId the new job's id
    function submitJob(bytes32 modelId, uint256[] calldata hops, JobParams calldata p)
        external
        payable
        returns (uint256 jobId)
    {
        if (msg.value == 0) revert JobBadRequest("fee is zero");
        if (msg.value > type(uint96).max) revert JobBadRequest("fee above 2^96 wei");
        if (p.maxTokens == 0) revert JobBadRequest("maxTokens is zero");
        if (p.input.length == 0 && p.inputHash == bytes32(0)) revert JobBadRequest("no input");
        if (p.commitWindow == 0 || p.revealWindow == 0 || uint256(p.commitWindow) + p.revealWindow > maxJobDuration) {
            revert JobBadWindows(p.commitWindow, p.revealWindow, maxJobDuration);
        }
        uint8 numReplicas = JobPlan.check(hops, models.liveBlocks(modelId));
        nodes.checkHops(modelId, hops);

        jobId = nextJobId++;
        uint32 commitDeadline = uint32(block.timestamp + p.commitWindow);
        uint32 revealDeadline = commitDeadline + p.revealWindow;
        _jobs[jobId] = Job({
            requester: msg.sender,
            commitDeadline: commitDeadline,
            revealDeadline: revealDeadline,
            numReplicas: numReplicas,
            status: OPEN,
            committedMask: 0,
            revealedMask: 0,
            termsHash: keccak256(abi.encodePacked(modelId, msg.value, hops))
        });
        emit JobSubmitted(jobId, msg.sender, modelId, msg.value, hops, p, commitDeadline, revealDeadline);
    }

    /// @notice The tail of `replica` commits keccak256(abi.encode(jobId, replica, outputHash, salt, tail)).
    /// @param modelId the job's model, as in JobSubmitted
    /// @param fee the job's fee, as in JobSubmitted
    /// @param hops the job's plan, as in JobSubmitted (with modelId and fee checked against the stored hash)
    function commit(
        uint256 jobId,
        uint256 replica,
        bytes32 commitment,
        bytes32 modelId,
        uint256 fee,
        uint256[] calldata hops
    ) external {
        Job storage j = _open(jobId);
        if (replica >= j.numReplicas) revert JobBadReplica(jobId, replica, j.numReplicas);
        if (keccak256(abi.encodePacked(modelId, fee, hops)) != j.termsHash) revert JobPlanMismatch(jobId);
        address tail = JobPlan.tailOf(hops, replica);
        if (msg.sender != tail) revert JobNotTail(jobId, replica, msg.sender, tail);
        if (block.timestamp > j.commitDeadline || j.revealedMask != 0) {
            revert JobCommitClosed(jobId, j.commitDeadline, block.timestamp);
        }
        uint8 bit = uint8(1 << replica);
        if (j.committedMask & bit != 0) revert JobAlreadyCommitted(jobId, replica);
        j.committedMask |= bit;
        _replicaHash[jobId][replica] = commitment;
        emit JobCommitted(jobId, replica, commitment);
    }

    /// @notice The committing tail reveals its output bytes and salt.
    function reveal(uint256 jobId, uint256 replica, bytes calldata output, bytes32 salt) external {
        Job storage j = _open(jobId);
        if (replica >= j.numReplicas) revert JobBadReplica(jobId, replica, j.numReplicas);
        uint8 bit = uint8(1 << replica);
        if (j.committedMask & bit == 0) revert JobNotCommitted(jobId, replica);
        if (j.revealedMask & bit != 0) revert JobAlreadyRevealed(jobId, replica);
        uint256 all = (uint256(1) << j.numReplicas) - 1;
        if (j.committedMask != all && block.timestamp <= j.commitDeadline) {
            revert JobRevealNotOpen(jobId, j.commitDeadline, block.timestamp);
        }
        if (block.timestamp > j.revealDeadline) revert JobRevealClosed(jobId, j.revealDeadline, block.timestamp);
        bytes32 outputHash = keccak256(output);
        bytes32 expected = keccak256(abi.encode(jobId, replica, outputHash, salt, msg.sender));
        if (_replicaHash[jobId][replica] != expected) revert JobBadReveal(jobId, replica);
        j.revealedMask |= bit;
        _replicaHash[jobId][replica] = outputHash;
        emit JobRevealed(jobId, replica, outputHash, output);
    }

    /// @notice Settle a job; anyone may call once every replica revealed or the reveal deadline passed.
    /// @dev Strict majority of all R replicas wins; its nodes share the fee pro rata by blocks
    ///      served, the integer-division dust goes to the first agreeing replica's tail. Disagreeing
    ///      replicas lose reputation; tails that committed and did not reveal are slashed (the
    ///      stake taken is credited to the requester). No majority refunds the whole fee.
    ///      JobFinalized reports every hop's outcome, earnings and slashed stake.
    function finalize(uint256 jobId, bytes32 modelId, uint256 fee, uint256[] calldata hops) external {
        Job storage j = _jobs[jobId];
        if (j.status == FINALIZED) revert JobAlreadyFinalized(jobId);
        if (j.status != OPEN) revert JobUnknown(jobId);
        uint256 r = j.numReplicas;
        if (j.revealedMask != (1 << r) - 1 && block.timestamp <= j.revealDeadline) {
            revert JobNotFinalizable(jobId, j.revealDeadline, block.timestamp);
        }
        if (keccak256(abi.encodePacked(modelId, fee, hops)) != j.termsHash) revert JobPlanMismatch(jobId);
        (bytes32 winner, uint8 winnersMask) = _tally(jobId, r, j.revealedMask);
        j.status = FINALIZED;
        _settle(jobId, j, fee, hops, winner, winnersMask);
    }

    /// @inheritdoc ISlashSink
    function depositSlashed() external payable {
        // Accounted for by finalize, from settle's return value.
        if (msg.sender != address(nodes)) revert JobOnlyNodeRegistry(msg.sender);
    }

    /// @notice Pay msg.sender's credits (refunds, division remainders, slashed stake).
    function withdraw() external {
        uint256 amount = _credits[msg.sender];
        if (amount == 0) revert JobNothingToWithdraw(msg.sender);
        _credits[msg.sender] = 0;
        emit CreditsWithdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert JobTransferFailed(msg.sender, amount);
    }

    /// @notice Withdrawable credits of an account.
    function creditsOf(address account) external view returns (uint256) {
        return _credits[account];
    }

    /// @notice A job's stored state; reverts JobUnknown if absent.
    function getJob(uint256 jobId) external view returns (Job memory) {
        Job memory j = _jobs[jobId];
        if (j.status == 0) revert JobUnknown(jobId);
        return j;
    }

    /// @notice Replica r's commitment (before reveal) or output hash (after).
    function replicaHash(uint256 jobId, uint256 replica) external view returns (bytes32) {
        return _replicaHash[jobId][replica];
    }

    // --------------------------------------------------------------- internal
    /// @dev Credit the requester, pay and judge the nodes, credit any slashed stake, emit JobFinalized.
    function _settle(
        uint256 jobId,
        Job storage j,
        uint256 fee,
        uint256[] calldata hops,
        bytes32 winner,
        uint8 winnersMask
    ) internal {
        JobPlan.Settlement memory st = JobPlan.outcomes(hops, fee, winnersMask, j.committedMask, j.revealedMask);
        address requester = j.requester;
        uint256 refund = winnersMask == 0 ? fee : 0;
        if (refund != 0) _credits[requester] += refund;
        (uint256 slashed, uint256[] memory cuts) = nodes.settle{value: st.total}(jobId, st.who, st.outcomes, st.paid);
        if (slashed != 0) _credits[requester] += slashed;
        emit JobFinalized(
            jobId, refund == 0 ? 1 : 2, winner, winnersMask, refund, st.who, st.outcomes, st.paid, cuts
        );
    }

    function _open(uint256 jobId) internal view returns (Job storage j) {
        j = _jobs[jobId];
        if (j.status == FINALIZED) revert JobAlreadyFinalized(jobId);
        if (j.status != OPEN) revert JobUnknown(jobId);
    }

    /// @dev The output hash revealed by a strict majority of all r replicas, and who revealed it.
    function _tally(uint256 jobId, uint256 r, uint8 revealed) internal view returns (bytes32 win, uint8 mask) {
        bytes32[MAX_REPLICAS] memory hs;
        for (uint256 i; i < r; ++i) {
            if (revealed & (1 << i) != 0) hs[i] = _replicaHash[jobId][i];
        }
        for (uint256 i; i < r; ++i) {
            if (revealed & (1 << i) == 0) continue;
            uint8 m;
            uint256 count;
            for (uint256 k; k < r; ++k) {
                if (revealed & (1 << k) != 0 && hs[k] == hs[i]) {
                    m |= uint8(1 << k);
                    ++count;
                }
            }
            if (2 * count > r) return (hs[i], m);
        }
    }

}
