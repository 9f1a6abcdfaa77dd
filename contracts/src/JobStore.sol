// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ModelRegistry} from "./ModelRegistry.sol";
import {NodeRegistry} from "./NodeRegistry.sol";
import {Disputes} from "./Disputes.sol";

/// @title JobStore
/// @notice JobMarket's configuration, job storage, events and errors, shared by its halves
///         (JobMarket: submit/commit/reveal; JobSettle: finalize, disputes, payouts).
abstract contract JobStore {
    // -------------------------------------------------------------- constants
    uint8 internal constant OPEN = 1;
    uint8 internal constant FINALIZED = 2;
    uint8 internal constant DISPUTED = 3; // waiting for drawVerifiers
    uint8 internal constant ATTESTING = 4;
    uint8 internal constant OPTIMISTIC = 1; // job mode (0: replicated)
    uint8 internal constant R_MAX = 8;

    // ------------------------------------------------------------- immutables
    ModelRegistry public immutable models;
    NodeRegistry public immutable nodes;
    Disputes public immutable disputes;
    uint256 public immutable maxJobDuration; // seconds, commit + reveal window
    uint256 public immutable minCommitWindow; // seconds
    uint256 public immutable minRevealWindow; // seconds
    uint256 public immutable attestWindow; // seconds verifiers have to attest
    uint256 public immutable finalizeGrace; // seconds after a stage's deadline before keepers are paid
    uint256 public immutable verifyBps; // verification reserve, basis points of the fee
    uint256 public immutable keeperBps; // keeper reward per stage, basis points of the fee

    // ---------------------------------------------------------------- storage
    /// @notice Deployment parameters (seconds and basis points).
    struct Config {
        uint32 maxJobDuration;
        uint32 minCommitWindow;
        uint32 minRevealWindow;
        uint32 attestWindow;
        uint32 finalizeGrace;
        uint16 verifyBps;
        uint16 keeperBps;
    }

    /// @notice A job's stored state: one slot of state and the hash of its plan and terms.
    struct Job {
        uint32 commitDeadline; // unix seconds, inclusive
        uint32 revealDeadline; // unix seconds, inclusive
        uint8 numReplicas;
        uint8 status; // 0 none, 1 open, 2 finalized, 3 disputed, 4 attesting
        uint8 committedMask; // bit r: replica r committed
        uint8 revealedMask; // bit r: replica r revealed
        uint8 standbyMask; // bit r: the tail's standby committed for replica r
        uint8 mode; // 0 replicated, 1 optimistic
        uint16 auditBps;
        uint8 dtype;
        uint8 weights;
        uint8 keeperPaid; // bit s: a keeper was paid for stage s (0 open, 1 disputed, 2 attesting)
        uint32 commitBlock; // block of the latest commit (the audit seed is the next block's hash)
        uint32 seedBlock; // disputed: the block whose hash draws the verifiers (the dispute's own block)
        uint32 stageDeadline; // disputed: when keepers may draw; attesting: the attestation deadline
        bytes32 jobHash; // keccak256(abi.encode(tailsDigest, hopsHash, termsDigest)) (README); 0 once finalized
    }

    /// @notice What settlement needs besides the plan; fixed at submission (all in JobSubmitted),
    ///         passed back by callers. Its digest: keccak256(abi.encode(requester, modelId, fee, weight,
    ///         keccak256(abi.encodePacked(prices)))).
    struct Terms {
        address requester;
        bytes32 modelId;
        uint256 fee; // wei escrowed
        uint256 weight; // the plan's price weight (NodeRegistry.checkHops): node pay is pool x price x blocks / weight
        uint256[] prices; // per hop word: its node's price at submission
    }

    /// @dev Which replicas revealed a valid route, their served masks and where their words start.
    struct Routes {
        uint64[R_MAX] served;
        uint8 valid;
        uint256[R_MAX + 1] firsts; // JobPlan.firsts
    }

    /// @dev What a settlement applies: served routes, replicas paid, words slashed, the verifiers.
    struct Outcome {
        uint8 code; // JobFinalized.outcome before "nobody paid" turns it into 3
        uint8 paidMask;
        uint64[R_MAX] served;
        uint256[R_MAX] slashAt; // per replica r < R, the plan word to slash (JobPlan.NONE: none)
        uint8[] decided; // dispute: the verdict per replica
        address[] verifiers; // dispute: the drawn verifiers
        bool[] aligned; // dispute: attested with the majority
    }

    mapping(uint256 => Job) internal _jobs;
    /// @dev replica r: commitment XOR committer until revealed; then outputHash[0:24] || servedMask
    mapping(uint256 => mapping(uint256 => bytes32)) internal _replica;
    mapping(address => uint256) internal _credits;
    /// @notice Wei of slashed stake burned (kept here, owned by nobody).
    uint256 public burned;

    // ----------------------------------------------------------------- events
    /// @notice A job went to dispute. reason: 1 revealed outputs differ, 2 audited, 3 seed expired (re-armed).
    event JobDisputed(uint256 indexed jobId, uint8 reason, uint256 seedBlock);
    /// @notice A job was settled; the one record of who got what (clients read it, never recompute it).
    /// @param outcome 1 agreed (fast path), 2 verified (a dispute paid an honest replica), 3 refunded (nobody paid),
    ///        4 unverified (disputed, no verifier could be drawn: every replica with a valid reveal paid)
    /// @param paidMask bit r: replica r's served hops were paid; the answer is the lowest such replica's output
    /// @param refund wei credited to the requester (unused node pay, the reserve left, dust)
    /// @param burnedWei slashed stake burned (no verifier in the majority)
    /// @param hops one word per hop word of the plan, in plan order (the node is the plan's):
    ///        paid wei (bits 0-95) | slashed wei (96-191) | outcome (192-199: 0 none, 1 paid, 3 slashed)
    event JobFinalized(
        uint256 indexed jobId, uint8 outcome, uint8 paidMask, uint256 refund, uint256 burnedWei, uint256[] hops
    );
    /// @notice A dispute's verdicts and what each verifier got: outcome 1 in the majority (paid),
    ///         2 absent or against it (reputation down).
    event DisputeSettled(uint256 indexed jobId, uint8[] verdicts, address[] verifiers, uint8[] outcomes, uint256[] paid);
    /// @notice A keeper pushed a stale job on and was credited.
    event KeeperRewarded(uint256 indexed jobId, address indexed keeper, uint256 amount);
    /// @notice Credits (refunds, keeper rewards) were paid out.
    event CreditsWithdrawn(address indexed account, uint256 amount);

    // ----------------------------------------------------------------- errors
    /// @notice A deployment parameter is out of bounds.
    error JobBadConfig(string what, uint256 value, uint256 bound);
    /// @notice No job has this id.
    error JobUnknown(uint256 jobId);
    /// @notice The plan or terms passed are not the ones submitted.
    error JobPlanMismatch(uint256 jobId);
    /// @notice Finalize needs every replica revealed or the reveal deadline passed.
    error JobNotFinalizable(uint256 jobId, uint256 revealDeadline, uint256 nowTs);
    /// @notice The job was already finalized.
    error JobAlreadyFinalized(uint256 jobId);
    /// @notice The block whose hash seeds the draw is not mined yet.
    error JobSeedNotReady(uint256 jobId, uint256 seedBlock, uint256 blockNumber);
    /// @notice The job is disputed: call drawVerifiers first.
    error JobAwaitingVerifiers(uint256 jobId, uint256 seedBlock);
    /// @notice drawVerifiers needs a disputed job.
    error JobNotDisputed(uint256 jobId, uint8 status);
    /// @notice This account has no credits.
    error JobNothingToWithdraw(address account);
    /// @notice Paying an account failed.
    error JobTransferFailed(address to, uint256 amount);
    /// @notice Only the node registry sends slashed stake.
    error JobOnlyNodeRegistry(address caller);

    // ------------------------------------------------------------ constructor
    constructor(ModelRegistry models_, NodeRegistry nodes_, Disputes disputes_, Config memory c) {
        uint256 lifetime = uint256(c.maxJobDuration) + c.attestWindow + 3 * uint256(c.finalizeGrace);
        if (nodes_.unbondingPeriod() <= lifetime) revert JobBadConfig("unbondingPeriod", nodes_.unbondingPeriod(), lifetime);
        if (c.minCommitWindow == 0) revert JobBadConfig("minCommitWindow", 0, 1);
        if (c.minRevealWindow == 0) revert JobBadConfig("minRevealWindow", 0, 1);
        if (uint256(c.minCommitWindow) + c.minRevealWindow > c.maxJobDuration) {
            revert JobBadConfig("maxJobDuration", c.maxJobDuration, uint256(c.minCommitWindow) + c.minRevealWindow);
        }
        if (c.attestWindow == 0) revert JobBadConfig("attestWindow", 0, 1);
        if (c.verifyBps >= 10_000) revert JobBadConfig("verifyBps", c.verifyBps, 9_999);
        if (3 * uint256(c.keeperBps) > c.verifyBps) revert JobBadConfig("keeperBps", c.keeperBps, c.verifyBps / 3);
        (models, nodes, disputes) = (models_, nodes_, disputes_);
        (maxJobDuration, minCommitWindow, minRevealWindow) = (c.maxJobDuration, c.minCommitWindow, c.minRevealWindow);
        (attestWindow, finalizeGrace, verifyBps, keeperBps) = (c.attestWindow, c.finalizeGrace, c.verifyBps, c.keeperBps);
    }

    // ------------------------------------------------------------------ views
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

    /// @notice Replica r's stored word: commitment XOR committer, or after the reveal
    ///         outputHash[0:24] || servedMask.
    function replicaRecord(uint256 jobId, uint256 replica) external view returns (bytes32) {
        return _replica[jobId][replica];
    }

    // --------------------------------------------------------------- internal
    /// @dev keccak256(abi.encode(requester, modelId, fee, weight, pricesHash)).
    function _termsDigest(address requester, bytes32 modelId, uint256 fee, uint256 w, bytes32 pricesHash)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(requester, modelId, fee, w, pricesHash));
    }

    /// @dev What a job stores of its plan and terms: hashes of its tail words, its hops and its terms.
    function _jobHash(bytes32 tailsDigest, bytes32 hopsHash, bytes32 termsDigest) internal pure returns (bytes32) {
        return keccak256(abi.encode(tailsDigest, hopsHash, termsDigest));
    }

    function _job(uint256 jobId) internal view returns (Job storage j) {
        j = _jobs[jobId];
        if (j.status == FINALIZED) revert JobAlreadyFinalized(jobId);
        if (j.status == 0) revert JobUnknown(jobId);
    }
}
