// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ModelRegistry} from "./ModelRegistry.sol";
import {NodeRegistry, ISlashSink} from "./NodeRegistry.sol";
import {Disputes} from "./Disputes.sol";
import {JobPlan} from "./JobPlan.sol";
import {JobSettle} from "./JobSettle.sol";
import {JobStore} from "./JobStore.sol";

/// @title JobMarket
/// @notice Escrowed inference jobs: R node-disjoint replicas (or one, audited at random), paid on
///         agreement, judged by contract-drawn verifiers on disagreement.
/// @dev Only a hash of the plan and terms is stored; they travel in JobSubmitted and are passed back
///      to `commit`, `finalize` and `drawVerifiers`. Hop words, commitment, verdicts: contracts/README.md.
///      Nobody profits from another's failure: slashed stake goes to the verifiers in the majority or
///      is burned, never to the requester. Balance == open escrow + credits + burned at all times.
contract JobMarket is ISlashSink, JobSettle {
    // -------------------------------------------------------------- constants
    uint256 public constant MAX_REPLICAS = 8; // = JobPlan.MAX_REPLICAS (replica bitmasks are uint8)

    // ---------------------------------------------------------------- storage
    /// @notice What a requester asks for, besides the model and the plan.
    struct JobParams {
        bytes input; // inline input bytes (empty if inputHash/inputUri point off chain)
        bytes32 inputHash; // keccak256 of off-chain input (or zero)
        string inputUri; // where off-chain input lives (or empty)
        uint32 maxTokens; // output tokens to generate, 1..contextLength (1 for a classifier)
        uint32 temperatureMilli; // temperature x1000, 0..10000; 0 is greedy
        uint256 seed; // sampling seed, see proto/types.py
        uint8 codec; // activation codec id 0..5 (contracts/README.md)
        uint32 commitWindow; // seconds from submission until commits close, >= minCommitWindow
        uint32 revealWindow; // seconds after the commit deadline until reveals close, >= minRevealWindow
        uint256 spec; // the execution spec, one word (contracts/README.md; proto.types.ExecSpec):
        // dtype bits 0-7 (0 fp32, 1 bf16, 2 fp16) | weights 8-15 (0 exact, 1 int8-mixed allowed)
        // | mode 16-23 (0 replicated, 1 optimistic) | auditBps 24-39 (optimistic only, <= 10000)
        // | topPMilli 40-55 (<= 1000, 0 off) | repetitionPenaltyMilli 56-71 (<= 10000, 0 off)
        // | topK 72-103 (<= 1_000_000, 0 off); bits 104-255 zero
    }

    /// @dev What submitJob learns about a plan.
    struct Plan {
        uint8 numReplicas;
        bytes32 tails; // digest of the tail words (JobPlan.scan)
        uint256[] prices; // per hop word
        uint256 weight; // NodeRegistry.checkHops's price weight
        uint256 minFee; // the fee floor
    }

    uint256 public nextJobId = 1;

    // ----------------------------------------------------------------- events
    /// @notice A job was submitted. Everything a worker needs is here; `prices[i]` is hop i's node
    ///         price and `weight` the plan's price weight (together with the fee: the job's Terms).
    event JobSubmitted(
        uint256 indexed jobId,
        address indexed requester,
        bytes32 indexed modelId,
        uint256 fee,
        uint256[] hops,
        uint256[] prices,
        uint256 weight,
        JobParams params,
        uint32 commitDeadline,
        uint32 revealDeadline
    );
    /// @notice A replica's tail (or its standby) committed (the commitment is in the transaction's calldata).
    event JobCommitted(uint256 indexed jobId, uint256 indexed replica);
    /// @notice A replica's committer revealed its output, receipts root and served route.
    event JobRevealed(uint256 indexed jobId, uint256 indexed replica, bytes32 receiptsRoot, uint64 servedMask, bytes output);

    // ----------------------------------------------------------------- errors
    /// @notice A job needs a fee (below 2^96 wei) and input (bytes or hash).
    error JobBadRequest(string reason);
    /// @notice A parameter is outside [min, max].
    error JobBadParam(string name, uint256 value, uint256 min, uint256 max);
    /// @notice Windows must reach the minimums and sum to at most maxJobDuration seconds.
    error JobBadWindows(
        uint32 commitWindow, uint32 revealWindow, uint256 minCommit, uint256 minReveal, uint256 maxJobDuration
    );
    /// @notice The fee is below what the plan's nodes ask for maxTokens plus the verification reserve.
    error JobFeeTooLow(uint256 fee, uint256 minFee);
    /// @notice Replica index out of range.
    error JobBadReplica(uint256 jobId, uint256 replica, uint256 numReplicas);
    /// @notice Only the tail of the replica (or the tail's standby) may commit; only the committer reveals.
    error JobNotTail(uint256 jobId, uint256 replica, address caller, address tail);
    /// @notice Commits are closed (deadline passed, reveals started, or the job moved on).
    error JobCommitClosed(uint256 jobId, uint256 commitDeadline, uint256 nowTs);
    /// @notice The replica already committed.
    error JobAlreadyCommitted(uint256 jobId, uint256 replica);
    /// @notice The replica already revealed.
    error JobAlreadyRevealed(uint256 jobId, uint256 replica);
    /// @notice Reveals open when every replica committed or the commit deadline passed.
    error JobRevealNotOpen(uint256 jobId, uint256 commitDeadline, uint256 nowTs);
    /// @notice The reveal deadline passed (or the job moved on).
    error JobRevealClosed(uint256 jobId, uint256 revealDeadline, uint256 nowTs);
    /// @notice The replica never committed.
    error JobNotCommitted(uint256 jobId, uint256 replica);
    /// @notice Output, receipts root, served mask and salt do not open the commitment.
    error JobBadReveal(uint256 jobId, uint256 replica);

    // ------------------------------------------------------------ constructor
    constructor(ModelRegistry models_, NodeRegistry nodes_, Disputes disputes_, Config memory c)
        JobStore(models_, nodes_, disputes_, c)
    {}

    // --------------------------------------------------------------- external
    /// @notice Escrow msg.value and open a job.
    /// @param hops the plan, packed as described in contracts/README.md
    /// @return jobId the new job's id
    function submitJob(bytes32 modelId, uint256[] calldata hops, JobParams calldata p)
        external
        payable
        returns (uint256 jobId)
    {
        if (msg.value == 0) revert JobBadRequest("fee is zero");
        if (msg.value > type(uint96).max) revert JobBadRequest("fee above 2^96 wei");
        if (p.input.length == 0 && p.inputHash == bytes32(0)) revert JobBadRequest("no input");
        Plan memory plan = _checkJob(modelId, hops, p);
        if (msg.value < plan.minFee) revert JobFeeTooLow(msg.value, plan.minFee);
        jobId = nextJobId++;
        (uint32 commitDeadline, uint32 revealDeadline) = _store(jobId, modelId, hops, p, plan);
        emit JobSubmitted(
            jobId, msg.sender, modelId, msg.value, hops, plan.prices, plan.weight, p, commitDeadline, revealDeadline
        );
    }

    /// @notice The least fee `submitJob` accepts for this plan: what its nodes ask for maxTokens
    ///         (the dearer of each primary and its standby) plus the verification reserve.
    function feeFloor(bytes32 modelId, uint256[] calldata hops, uint32 maxTokens, uint8 dtype, uint8 weights)
        external
        view
        returns (uint256)
    {
        (uint16 numBlocks,) = models.liveModel(modelId);
        JobPlan.check(hops, numBlocks);
        (, uint256 w) = nodes.checkHops(modelId, hops, dtype, weights);
        return _minFee(w * maxTokens);
    }

    /// @notice The tail of `replica` (or its standby) commits to an output (see contracts/README.md).
    /// @param tails the plan's tail words: each replica's last primary, then its standby if any
    /// @param hopsHash keccak256(abi.encodePacked(hops)) of the plan in JobSubmitted
    /// @param termsDigest of the job's Terms (JobSettle.Terms), from JobSubmitted
    function commit(
        uint256 jobId,
        uint256 replica,
        bytes32 commitment,
        uint256[] calldata tails,
        bytes32 hopsHash,
        bytes32 termsDigest
    ) external {
        Job storage j = _job(jobId);
        Job memory m = j;
        if (replica >= m.numReplicas) revert JobBadReplica(jobId, replica, m.numReplicas);
        if (_jobHash(JobPlan.chain(tails), hopsHash, termsDigest) != m.jobHash) revert JobPlanMismatch(jobId);
        (address tail, address standby) = JobPlan.tailOf(tails, replica);
        if (msg.sender != tail && (msg.sender != standby || standby == address(0))) {
            revert JobNotTail(jobId, replica, msg.sender, tail);
        }
        if (m.status != OPEN || block.timestamp > m.commitDeadline || m.revealedMask != 0) {
            revert JobCommitClosed(jobId, m.commitDeadline, block.timestamp);
        }
        uint8 bit = uint8(1 << replica);
        if (m.committedMask & bit != 0) revert JobAlreadyCommitted(jobId, replica);
        (j.committedMask, j.standbyMask, j.commitBlock) =
            (m.committedMask | bit, msg.sender != tail ? m.standbyMask | bit : m.standbyMask, uint32(block.number));
        _replica[jobId][replica] = commitment ^ bytes32(uint256(uint160(msg.sender)));
        emit JobCommitted(jobId, replica);
    }

    /// @notice The committer reveals its output bytes, receipts root, served route and salt.
    function reveal(
        uint256 jobId,
        uint256 replica,
        bytes calldata output,
        bytes32 receiptsRoot,
        uint64 servedMask,
        bytes32 salt
    ) external {
        Job storage j = _job(jobId);
        if (replica >= j.numReplicas) revert JobBadReplica(jobId, replica, j.numReplicas);
        uint8 bit = uint8(1 << replica);
        if (j.committedMask & bit == 0) revert JobNotCommitted(jobId, replica);
        if (j.revealedMask & bit != 0) revert JobAlreadyRevealed(jobId, replica);
        if (j.committedMask != (1 << j.numReplicas) - 1 && block.timestamp <= j.commitDeadline) {
            revert JobRevealNotOpen(jobId, j.commitDeadline, block.timestamp);
        }
        if (j.status != OPEN || block.timestamp > j.revealDeadline) {
            revert JobRevealClosed(jobId, j.revealDeadline, block.timestamp);
        }
        bytes32 outputHash = keccak256(output);
        uint256 x = uint256(_replica[jobId][replica])
            ^ uint256(keccak256(abi.encode(jobId, replica, outputHash, receiptsRoot, servedMask, salt)));
        if (x != uint160(msg.sender)) {
            if (x >> 160 == 0) revert JobNotTail(jobId, replica, msg.sender, address(uint160(x)));
            revert JobBadReveal(jobId, replica);
        }
        j.revealedMask |= bit;
        _replica[jobId][replica] = bytes32((uint256(outputHash) >> 64 << 64) | servedMask);
        emit JobRevealed(jobId, replica, receiptsRoot, servedMask, output);
    }

    /// @inheritdoc ISlashSink
    function depositSlashed() external payable {
        // Accounted for by the settlement, from settle's return value.
        if (msg.sender != address(nodes)) revert JobOnlyNodeRegistry(msg.sender);
    }

    /// @notice Pay msg.sender's credits (refunds, keeper rewards).
    function withdraw() external {
        uint256 amount = _credits[msg.sender];
        if (amount == 0) revert JobNothingToWithdraw(msg.sender);
        _credits[msg.sender] = 0;
        emit CreditsWithdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert JobTransferFailed(msg.sender, amount);
    }

    // --------------------------------------------------------------- internal
    /// @dev Write a new job's state and hash; return its deadlines.
    function _store(uint256 jobId, bytes32 modelId, uint256[] calldata hops, JobParams calldata p, Plan memory plan)
        internal
        returns (uint32 commitDeadline, uint32 revealDeadline)
    {
        commitDeadline = uint32(block.timestamp + p.commitWindow);
        revealDeadline = commitDeadline + p.revealWindow;
        Job storage j = _jobs[jobId];
        (j.commitDeadline, j.revealDeadline, j.numReplicas, j.status) =
            (commitDeadline, revealDeadline, plan.numReplicas, OPEN);
        uint256 spec = p.spec;
        (j.dtype, j.weights, j.mode, j.auditBps) = (uint8(spec), uint8(spec >> 8), uint8(spec >> 16), uint16(spec >> 24));
        bytes32 terms =
            _termsDigest(msg.sender, modelId, msg.value, plan.weight, keccak256(abi.encodePacked(plan.prices)));
        j.jobHash = _jobHash(plan.tails, JobPlan.hashWords(hops), terms);
    }

    /// @dev Validate model, parameters and plan; return R, the hop prices and the fee floor.
    function _checkJob(bytes32 modelId, uint256[] calldata hops, JobParams calldata p)
        internal
        view
        returns (Plan memory plan)
    {
        (uint16 numBlocks, uint32 contextLength) = models.liveModel(modelId);
        if (p.maxTokens == 0 || p.maxTokens > contextLength) _badParam("maxTokens", p.maxTokens, 1, contextLength);
        if (p.temperatureMilli > 10_000) _badParam("temperatureMilli", p.temperatureMilli, 0, 10_000);
        if (p.codec > 5) _badParam("codec", p.codec, 0, 5);
        uint256 spec = p.spec;
        if (spec >> 104 != 0) _badParam("spec", spec, 0, (1 << 104) - 1);
        (uint256 dtype, uint256 mode) = (spec & 0xff, (spec >> 16) & 0xff);
        if (dtype > 2) _badParam("dtype", dtype, 0, 2);
        if ((spec >> 8) & 0xff > 1) _badParam("weights", (spec >> 8) & 0xff, 0, 1);
        if (mode > OPTIMISTIC) _badParam("mode", mode, 0, 1);
        uint256 maxAudit = mode == OPTIMISTIC ? 10_000 : 0;
        if ((spec >> 24) & 0xffff > maxAudit) _badParam("auditBps", (spec >> 24) & 0xffff, 0, maxAudit);
        if ((spec >> 40) & 0xffff > 1000) _badParam("topPMilli", (spec >> 40) & 0xffff, 0, 1000);
        if ((spec >> 56) & 0xffff > 10_000) _badParam("repetitionPenaltyMilli", (spec >> 56) & 0xffff, 0, 10_000);
        if (spec >> 72 > 1_000_000) _badParam("topK", spec >> 72, 0, 1_000_000);
        if (
            p.commitWindow < minCommitWindow || p.revealWindow < minRevealWindow
                || uint256(p.commitWindow) + p.revealWindow > maxJobDuration
        ) revert JobBadWindows(p.commitWindow, p.revealWindow, minCommitWindow, minRevealWindow, maxJobDuration);
        (plan.numReplicas, plan.tails) = JobPlan.check(hops, numBlocks);
        if (mode == OPTIMISTIC && plan.numReplicas != 1) _badParam("replicas", plan.numReplicas, 1, 1);
        (plan.prices, plan.weight) = nodes.checkHops(modelId, hops, uint8(dtype), uint8(spec >> 8));
        plan.minFee = _minFee(plan.weight * p.maxTokens);
    }

    /// @dev Revert JobBadParam (one copy of its encoding).
    function _badParam(string memory name, uint256 value, uint256 min, uint256 max) internal pure {
        revert JobBadParam(name, value, min, max);
    }

    /// @dev The least fee whose node pool (fee minus the verification reserve) covers `ask`.
    function _minFee(uint256 ask) internal view returns (uint256) {
        uint256 keep = 10_000 - verifyBps;
        return (ask * 10_000 + keep - 1) / keep;
    }
}
