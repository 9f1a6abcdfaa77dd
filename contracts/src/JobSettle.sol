// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Disputes} from "./Disputes.sol";
import {JobPlan} from "./JobPlan.sol";
import {JobStore} from "./JobStore.sol";

/// @title JobSettle
/// @notice JobMarket's settlement half: finalize (fast path or dispute), verifier draws, payouts,
///         keeper rewards.
/// @dev Every state reaches FINALIZED by a deadline and anyone may push it there; a push made more
///      than `finalizeGrace` after a stage's deadline earns the caller keeperBps of the fee (once per
///      stage, from the verification reserve).
abstract contract JobSettle is JobStore {
    // --------------------------------------------------------------- external
    /// @notice Move a job on (anyone): an open job once every replica revealed or its reveal deadline
    ///         passed (fast path, or dispute); an attesting job once every verifier attested or the
    ///         attestation deadline passed (settles by the verifiers' majority).
    function finalize(uint256 jobId, uint256[] calldata hops, Terms calldata t) external {
        Job storage j = _job(jobId);
        Job memory m = j;
        if (m.status == DISPUTED) revert JobAwaitingVerifiers(jobId, m.seedBlock);
        if (m.status == OPEN) {
            if (m.revealedMask != (1 << m.numReplicas) - 1 && block.timestamp <= m.revealDeadline) {
                revert JobNotFinalizable(jobId, m.revealDeadline, block.timestamp);
            }
            Routes memory rt = _routes(jobId, m, hops, t);
            _keeper(jobId, j, m, t.fee, 0, uint256(m.revealDeadline) + finalizeGrace);
            _finalizeOpen(jobId, j, m, hops, t, rt);
        } else {
            Outcome memory o;
            (o.decided, o.verifiers, o.aligned) = disputes.close(jobId);
            Routes memory rt = _routes(jobId, m, hops, t);
            _keeper(jobId, j, m, t.fee, 2, uint256(m.stageDeadline) + finalizeGrace);
            (o.code, o.served, o.slashAt) = (2, rt.served, _silent(m, hops, rt));
            for (uint256 r; r < o.decided.length; ++r) {
                if (rt.valid & (1 << r) == 0) continue;
                if (o.decided[r] == 1) o.paidMask |= uint8(1 << r);
                if (o.decided[r] >= 2) o.slashAt[r] = JobPlan.servedWord(rt.firsts[r], rt.served[r], o.decided[r] - 2);
            }
            _settle(jobId, j, m, hops, t, o);
        }
    }

    /// @notice Draw the verifiers of a disputed job (anyone, once its seed block is mined). With
    ///         nobody eligible the job settles at once, unverified: every replica that revealed a
    ///         valid route is paid, only silent committers are slashed.
    function drawVerifiers(uint256 jobId, uint256[] calldata hops, Terms calldata t) external {
        Job storage j = _job(jobId);
        Job memory m = j;
        if (m.status != DISPUTED) revert JobNotDisputed(jobId, m.status);
        Routes memory rt = _routes(jobId, m, hops, t);
        if (block.number <= m.seedBlock) revert JobSeedNotReady(jobId, m.seedBlock, block.number);
        _keeper(jobId, j, m, t.fee, 1, m.stageDeadline);
        bytes32 seed = blockhash(m.seedBlock);
        if (seed == 0) {
            j.seedBlock = uint32(block.number);
            emit JobDisputed(jobId, 3, block.number);
            return;
        }
        uint64 maxVerdicts;
        for (uint256 r; r < m.numReplicas; ++r) {
            if (rt.valid & (1 << r) != 0) maxVerdicts |= uint64((1 + JobPlan.popcount(rt.served[r])) << (8 * r));
        }
        uint32 deadline = uint32(block.timestamp + attestWindow);
        address[] memory drawn = disputes.open(
            jobId,
            hops,
            Disputes.Request(t.modelId, t.requester, m.dtype, m.weights, seed, m.numReplicas, maxVerdicts, deadline)
        );
        if (drawn.length == 0) {
            // nobody can judge: pay every replica that revealed a route, so a requester cannot get
            // work for free by provoking a dispute where no verifier exists; slash only the silent
            Outcome memory o;
            (o.code, o.paidMask, o.served, o.slashAt) = (4, rt.valid, rt.served, _silent(m, hops, rt));
            return _settle(jobId, j, m, hops, t, o);
        }
        (j.status, j.stageDeadline) = (ATTESTING, deadline);
    }

    // --------------------------------------------------------------- internal
    /// @dev An open job whose outputs are in: pay on agreement (or an unaudited optimistic job),
    ///      otherwise open a dispute seeded by this block's hash.
    function _finalizeOpen(
        uint256 jobId,
        Job storage j,
        Job memory m,
        uint256[] calldata hops,
        Terms calldata t,
        Routes memory rt
    ) internal {
        bool agree = true;
        uint256 first;
        for (uint256 r; r < m.numReplicas; ++r) {
            if (rt.valid & (1 << r) == 0) continue;
            uint256 h = (uint256(_replica[jobId][r]) >> 64) | (1 << 192);
            if (first == 0) first = h;
            else if (first != h) agree = false;
        }
        uint8 reason = m.mode == OPTIMISTIC ? (rt.valid != 0 && _audited(jobId, m) ? 2 : 0) : (agree ? 0 : 1);
        if (reason == 0) {
            Outcome memory o;
            (o.code, o.paidMask, o.served, o.slashAt) = (1, rt.valid, rt.served, _silent(m, hops, rt));
            return _settle(jobId, j, m, hops, t, o);
        }
        // the seed is this block's hash: unknown to everyone when the outputs were revealed, and
        // drawable from the very next block (a chain that mines on demand needs no other transaction)
        (j.status, j.seedBlock, j.stageDeadline) =
            (DISPUTED, uint32(block.number), uint32(block.timestamp + finalizeGrace));
        emit JobDisputed(jobId, reason, block.number);
    }

    /// @dev Whether an optimistic job is audited: keccak(blockhash(commitBlock + 1), jobId) % 1e4 <
    ///      auditBps; an expired blockhash audits (waiting the draw out never helps the node).
    function _audited(uint256 jobId, Job memory m) internal view returns (bool) {
        if (m.auditBps == 0 || m.auditBps >= 10_000) return m.auditBps != 0;
        uint256 seedBlock = uint256(m.commitBlock) + 1;
        if (block.number <= seedBlock) revert JobSeedNotReady(jobId, seedBlock, block.number);
        bytes32 bh = blockhash(seedBlock);
        return bh == 0 || uint256(keccak256(abi.encode(bh, jobId))) % 10_000 < m.auditBps;
    }

    /// @dev Check the plan and terms against the job's hash; return the revealed replicas whose
    ///      servedMask is a route of the plan, their masks and where each replica's words start.
    function _routes(uint256 jobId, Job memory m, uint256[] calldata hops, Terms calldata t)
        internal
        view
        returns (Routes memory rt)
    {
        bytes32 tails;
        (tails, rt.firsts) = JobPlan.scan(hops);
        bytes32 terms = _termsDigest(t.requester, t.modelId, t.fee, t.weight, JobPlan.hashWords(t.prices));
        if (_jobHash(tails, JobPlan.hashWords(hops), terms) != m.jobHash) revert JobPlanMismatch(jobId);
        for (uint256 r; r < m.numReplicas; ++r) {
            if (m.revealedMask & (1 << r) == 0) continue;
            uint64 mask = uint64(uint256(_replica[jobId][r]));
            if (_validRoute(hops, rt, r, mask, m.standbyMask & (1 << r) != 0)) {
                rt.valid |= uint8(1 << r);
                rt.served[r] = mask;
            }
        }
    }

    function _validRoute(uint256[] calldata hops, Routes memory rt, uint256 r, uint64 mask, bool byStandby)
        internal
        pure
        returns (bool)
    {
        return JobPlan.validRoute(hops, rt.firsts[r], rt.firsts[r + 1], mask, byStandby);
    }

    /// @dev Per replica r < R, the word to slash: the committer of a replica that committed and did
    ///      not reveal a valid route (its commitment or reveal is the evidence); NONE elsewhere.
    function _silent(Job memory m, uint256[] calldata hops, Routes memory rt)
        internal
        pure
        returns (uint256[R_MAX] memory slashAt)
    {
        for (uint256 r; r < m.numReplicas; ++r) {
            uint8 bit = uint8(1 << r);
            slashAt[r] = m.committedMask & bit == 0 || rt.valid & bit != 0
                ? JobPlan.NONE
                : JobPlan.committerWord(hops, rt.firsts[r + 1], m.standbyMask & bit != 0);
        }
    }

    /// @dev Pay the served hops of the paid replicas, slash, pay the verifiers in the majority (the
    ///      reserve left and the slashed stake); without them refund the reserve left and burn the
    ///      stake. The rest of the node pool goes back to the requester. Emits JobFinalized.
    function _settle(
        uint256 jobId,
        Job storage j,
        Job memory m,
        uint256[] calldata hops,
        Terms calldata t,
        Outcome memory o
    ) internal {
        j.status = FINALIZED;
        j.jobHash = 0; // finalized for good: the plan is never checked again (gas refund)
        for (uint256 r; r < m.numReplicas; ++r) {
            if (m.committedMask & (1 << r) != 0) delete _replica[jobId][r];
        }
        uint256 pool = t.fee - (t.fee * verifyBps) / 10_000;
        (uint256[] memory entries, uint256 total) =
            JobPlan.payouts(hops, t.prices, [pool, t.weight], o.served, o.paidMask, o.slashAt);
        (uint256 slashed, uint256[] memory cuts) = nodes.settle{value: total}(hops, entries);
        for (uint256 r; slashed != 0 && r < m.numReplicas; ++r) {
            uint256 i = o.slashAt[r];
            if (i != JobPlan.NONE) entries[i] |= cuts[i] << 96; // JobFinalized's word: paid | slashed << 96 | outcome
        }
        uint256 left = (t.fee * verifyBps) / 10_000 - JobPlan.popcount(m.keeperPaid) * ((t.fee * keeperBps) / 10_000);
        bool paidVerifiers = o.verifiers.length != 0 && _payVerifiers(jobId, o, left + slashed);
        uint256 refund = pool - total + (paidVerifiers ? 0 : left);
        uint256 burnt = paidVerifiers ? 0 : slashed;
        if (burnt != 0) burned += burnt;
        if (refund != 0) _credits[t.requester] += refund;
        emit JobFinalized(jobId, o.paidMask == 0 ? 3 : o.code, o.paidMask, refund, burnt, entries);
    }

    /// @dev Share `pot` among the verifiers in the majority (the first gets the dust); absent or
    ///      dissenting ones lose reputation. Returns false, paying nobody, when none is in the majority.
    function _payVerifiers(uint256 jobId, Outcome memory o, uint256 pot) internal returns (bool) {
        uint256 n = o.verifiers.length;
        uint256 count;
        for (uint256 i; i < n; ++i) {
            if (o.aligned[i]) ++count;
        }
        uint8[] memory outcomes = new uint8[](n);
        uint256[] memory paid = new uint256[](n);
        uint256[] memory who = new uint256[](n);
        uint256[] memory entries = new uint256[](n);
        uint256 total;
        for (uint256 i; i < n; ++i) {
            outcomes[i] = o.aligned[i] ? 1 : 2;
            if (o.aligned[i]) {
                paid[i] = total == 0 ? pot - (pot / count) * (count - 1) : pot / count;
                total += paid[i];
            }
            (who[i], entries[i]) = (uint160(o.verifiers[i]), paid[i] | (uint256(outcomes[i]) << 192));
        }
        nodes.settle{value: total}(who, entries);
        emit DisputeSettled(jobId, o.decided, o.verifiers, outcomes, paid);
        return count != 0;
    }

    /// @dev Credit the caller a keeper reward if it moves stage `stage` past `deadline` (once per stage).
    function _keeper(uint256 jobId, Job storage j, Job memory m, uint256 fee, uint8 stage, uint256 deadline) internal {
        if (block.timestamp <= deadline || m.keeperPaid & (1 << stage) != 0) return;
        m.keeperPaid |= uint8(1 << stage);
        j.keeperPaid = m.keeperPaid;
        uint256 amount = (fee * keeperBps) / 10_000;
        _credits[msg.sender] += amount;
        emit KeeperRewarded(jobId, msg.sender, amount);
    }

}
