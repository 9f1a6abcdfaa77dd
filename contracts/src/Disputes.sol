// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {NodeRegistry} from "./NodeRegistry.sol";
import {JobPlan} from "./JobPlan.sol";

/// @title Disputes
/// @notice Who judges a disputed job, and what they said: K verifiers drawn by the contract from
///         the model's full nodes, each attesting one verdict per replica. Holds no money.
/// @dev JobMarket opens a case (with a seed fixed after the outputs were committed) and closes it;
///      verifiers call `attest` here. Verdicts: 0 unknown (did not reveal, or abstain), 1 honest,
///      2 + k faulty where the k-th served word of the replica is the first faulty hop.
contract Disputes {
    // -------------------------------------------------------------- constants
    uint8 private constant ATTESTING = 1;
    uint8 private constant CLOSED = 2;
    uint256 public constant MAX_VERIFIERS = 8; // attestation bitmasks are uint8

    // ------------------------------------------------------------- immutables
    NodeRegistry public immutable nodes;
    uint256 public immutable verifierCount; // K: verifiers drawn per dispute
    uint256 public immutable maxDrawAttempts; // candidates looked at per draw: 8 K
    address private immutable _deployer;

    // ---------------------------------------------------------------- storage
    struct Case {
        uint32 attestDeadline; // unix seconds, inclusive
        uint8 status; // 0 none, 1 attesting, 2 closed
        uint8 numReplicas;
        uint8 attestedMask; // bit i: verifiers[i] attested
        uint64 maxVerdicts; // byte r: the highest verdict replica r may get (0: it did not reveal a route)
        uint64[MAX_VERIFIERS] verdicts; // per verifier, byte r: its verdict on replica r
        address[] verifiers;
    }

    /// @notice What JobMarket tells the court when it opens a case.
    struct Request {
        bytes32 modelId;
        address requester;
        uint8 dtype; // the job's dtype class
        uint8 weights; // the job's weights mode
        bytes32 seed; // blockhash fixed after the outputs were committed
        uint8 numReplicas;
        uint64 maxVerdicts; // byte r: the highest verdict replica r may get (0: no valid reveal)
        uint32 attestDeadline; // unix seconds, inclusive
    }

    address public jobMarket;
    mapping(uint256 => Case) private _cases;

    // ----------------------------------------------------------------- events
    /// @notice Verifiers were drawn for a disputed job; they attest until `attestDeadline`.
    event VerifiersDrawn(uint256 indexed jobId, address[] verifiers, uint256 attestDeadline);
    /// @notice A verifier attested its verdicts on a job's replicas.
    event Attested(uint256 indexed jobId, address indexed verifier, uint8[] verdicts);
    /// @notice The job market address was set (once, at deployment).
    event JobMarketSet(address jobMarket);

    // ----------------------------------------------------------------- errors
    /// @notice No attestations are taken for this job (no case, or it was closed).
    error DisputeNotOpen(uint256 jobId);
    /// @notice The caller was not drawn as a verifier of this job.
    error DisputeNotVerifier(uint256 jobId, address caller);
    /// @notice This verifier already attested.
    error DisputeAlreadyAttested(uint256 jobId, address verifier);
    /// @notice The attestation deadline passed.
    error DisputeAttestClosed(uint256 jobId, uint256 attestDeadline, uint256 nowTs);
    /// @notice One verdict per replica is needed.
    error DisputeBadVerdicts(uint256 jobId, uint256 length, uint256 numReplicas);
    /// @notice A verdict is out of range for its replica.
    error DisputeBadVerdict(uint256 jobId, uint256 replica, uint8 verdict, uint8 maxVerdict);
    /// @notice Attestations are still open: not every verifier attested and the deadline has not passed.
    error DisputeStillOpen(uint256 jobId, uint256 attestDeadline, uint256 nowTs);
    /// @notice Only the job market may do this.
    error DisputeOnlyJobMarket(address caller);
    /// @notice Deployment wiring error (job market set twice or by someone else), or K out of 1..8.
    error DisputeBadSetup();

    // -------------------------------------------------------------- modifiers
    modifier onlyJobMarket() {
        if (msg.sender != jobMarket) revert DisputeOnlyJobMarket(msg.sender);
        _;
    }

    // ------------------------------------------------------------ constructor
    constructor(NodeRegistry nodes_, uint256 verifierCount_) {
        if (verifierCount_ == 0 || verifierCount_ > MAX_VERIFIERS) revert DisputeBadSetup();
        nodes = nodes_;
        verifierCount = verifierCount_;
        maxDrawAttempts = 8 * verifierCount_;
        _deployer = msg.sender;
    }

    // --------------------------------------------------------------- external
    /// @notice Wire the job market; callable once, by the deployer.
    function setJobMarket(address jobMarket_) external {
        if (msg.sender != _deployer || jobMarket != address(0) || jobMarket_ == address(0)) revert DisputeBadSetup();
        jobMarket = jobMarket_;
        emit JobMarketSet(jobMarket_);
    }

    /// @notice Draw up to K verifiers for a job and open its case. Only the job market.
    /// @dev Candidate i is fullNodesOf(modelId)[keccak256(abi.encode(seed, jobId, i)) % pool]; it is
    ///      taken if active, able to run the job's dtype and weights, not the requester, not a node
    ///      of the plan and not drawn already. At most maxDrawAttempts candidates are looked at.
    /// @return drawn the verifiers (empty: nobody eligible, no case opened)
    function open(uint256 jobId, uint256[] calldata hops, Request calldata q)
        external
        onlyJobMarket
        returns (address[] memory drawn)
    {
        drawn = _draw(jobId, hops, q);
        if (drawn.length == 0) return drawn;
        Case storage c = _cases[jobId];
        (c.attestDeadline, c.status, c.numReplicas, c.maxVerdicts) =
            (q.attestDeadline, ATTESTING, q.numReplicas, q.maxVerdicts);
        c.verifiers = drawn;
        emit VerifiersDrawn(jobId, drawn, q.attestDeadline);
    }

    /// @notice As a drawn verifier, give one verdict per replica (see the contract's notes).
    function attest(uint256 jobId, uint8[] calldata verdicts) external {
        Case storage c = _cases[jobId];
        if (c.status != ATTESTING) revert DisputeNotOpen(jobId);
        uint256 i = _indexOf(c.verifiers, msg.sender);
        if (i == type(uint256).max) revert DisputeNotVerifier(jobId, msg.sender);
        if (c.attestedMask & (1 << i) != 0) revert DisputeAlreadyAttested(jobId, msg.sender);
        if (block.timestamp > c.attestDeadline) revert DisputeAttestClosed(jobId, c.attestDeadline, block.timestamp);
        if (verdicts.length != c.numReplicas) revert DisputeBadVerdicts(jobId, verdicts.length, c.numReplicas);
        uint64 packed;
        for (uint256 r; r < verdicts.length; ++r) {
            uint8 most = uint8(c.maxVerdicts >> (8 * r));
            if (verdicts[r] > most) revert DisputeBadVerdict(jobId, r, verdicts[r], most);
            packed |= uint64(uint256(verdicts[r]) << (8 * r));
        }
        c.verdicts[i] = packed;
        c.attestedMask |= uint8(1 << i);
        emit Attested(jobId, msg.sender, verdicts);
    }

    /// @notice Close a case once every verifier attested or its deadline passed. Only the job market.
    /// @return decided per replica, the verdict of a strict majority of the attestations (0 without one)
    /// @return verifiers the drawn verifiers
    /// @return aligned per verifier: attested and agreed with every decided verdict
    function close(uint256 jobId)
        external
        onlyJobMarket
        returns (uint8[] memory decided, address[] memory verifiers, bool[] memory aligned)
    {
        Case storage c = _cases[jobId];
        if (c.status != ATTESTING) revert DisputeNotOpen(jobId);
        verifiers = c.verifiers;
        uint256 k = verifiers.length;
        uint8 attested = c.attestedMask;
        if (attested != (1 << k) - 1 && block.timestamp <= c.attestDeadline) {
            revert DisputeStillOpen(jobId, c.attestDeadline, block.timestamp);
        }
        c.status = CLOSED;
        uint64[MAX_VERIFIERS] memory v = c.verdicts;
        uint256 votes = JobPlan.popcount(attested);
        decided = new uint8[](c.numReplicas);
        aligned = new bool[](k);
        for (uint256 i; i < k; ++i) aligned[i] = attested & (1 << i) != 0;
        for (uint256 r; r < decided.length; ++r) {
            (bool hasMajority, uint8 winner) = _majority(v, attested, k, r, votes);
            if (!hasMajority) continue;
            decided[r] = winner;
            for (uint256 i; i < k; ++i) {
                if (uint8(v[i] >> (8 * r)) != winner) aligned[i] = false;
            }
        }
    }

    /// @notice The verifiers drawn for a job (empty before the draw).
    function verifiersOf(uint256 jobId) external view returns (address[] memory) {
        return _cases[jobId].verifiers;
    }

    /// @notice A job's case: verifiers, who attested, their verdicts, the deadline and status (1 open, 2 closed).
    function attestations(uint256 jobId)
        external
        view
        returns (address[] memory verifiers, bool[] memory attested, uint8[][] memory verdicts, uint32 attestDeadline, uint8 status)
    {
        Case storage c = _cases[jobId];
        verifiers = c.verifiers;
        attested = new bool[](verifiers.length);
        verdicts = new uint8[][](verifiers.length);
        for (uint256 i; i < verifiers.length; ++i) {
            attested[i] = c.attestedMask & (1 << i) != 0;
            verdicts[i] = new uint8[](c.numReplicas);
            for (uint256 r; r < c.numReplicas; ++r) verdicts[i][r] = uint8(c.verdicts[i] >> (8 * r));
        }
        return (verifiers, attested, verdicts, c.attestDeadline, c.status);
    }

    // --------------------------------------------------------------- internal
    function _draw(uint256 jobId, uint256[] calldata hops, Request calldata q)
        internal
        view
        returns (address[] memory drawn)
    {
        uint256 pool = nodes.fullNodeCount(q.modelId);
        drawn = new address[](verifierCount);
        uint256[] memory excluded = JobPlan.newSet(hops.length + verifierCount + 1);
        for (uint256 i; i < hops.length; ++i) JobPlan.insert(excluded, address(uint160(hops[i])));
        JobPlan.insert(excluded, q.requester);
        uint256 got;
        for (uint256 i; pool != 0 && i < maxDrawAttempts && got < verifierCount; ++i) {
            uint256 idx = uint256(keccak256(abi.encode(q.seed, jobId, i))) % pool;
            address node = _eligible(q, idx);
            if (node != address(0) && JobPlan.insert(excluded, node)) drawn[got++] = node; // not in the plan,
            // not the requester, not drawn already
        }
        assembly {
            mstore(drawn, got) // shrink to the verifiers found
        }
    }

    /// @dev The idx-th full node if it is active and runs the job's dtype and weights, else address(0).
    function _eligible(Request calldata q, uint256 idx) internal view returns (address) {
        (address node, uint8 status, uint8 caps) = nodes.fullNodeAt(q.modelId, idx);
        uint8 needCaps = q.weights == 0 ? 8 : 8 | 16; // NodeRegistry.CAP_EXACT (| CAP_INT8)
        if (status != 1 || caps & (1 << q.dtype) == 0 || caps & needCaps == 0) return address(0); // 1: active
        return node;
    }

    /// @dev Whether a strict majority of the `votes` attestations gave replica r the same verdict.
    function _majority(uint64[MAX_VERIFIERS] memory v, uint8 attested, uint256 k, uint256 r, uint256 votes)
        internal
        pure
        returns (bool, uint8)
    {
        for (uint256 i; i < k; ++i) {
            if (attested & (1 << i) == 0) continue;
            uint8 mine = uint8(v[i] >> (8 * r));
            uint256 same;
            for (uint256 j; j < k; ++j) {
                if (attested & (1 << j) != 0 && uint8(v[j] >> (8 * r)) == mine) ++same;
            }
            if (2 * same > votes) return (true, mine);
        }
        return (false, 0);
    }

    function _indexOf(address[] storage list, address a) internal view returns (uint256) {
        for (uint256 i; i < list.length; ++i) {
            if (list[i] == a) return i;
        }
        return type(uint256).max;
    }
}
