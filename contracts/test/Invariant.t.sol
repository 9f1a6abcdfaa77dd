// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Handler} from "./Handler.sol";
import {ModelRegistry} from "../src/ModelRegistry.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {NodeBook} from "../src/NodeBook.sol";
import {Disputes} from "../src/Disputes.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {JobStore} from "../src/JobStore.sol";
import {JobPlan} from "../src/JobPlan.sol";

/// @dev What forge reads from targetSelectors() (no forge-std here).
struct FuzzSelector {
    address addr;
    bytes4[] selectors;
}

/// @dev Random plans, actors and clock moves (Handler): money is conserved and every settlement's
///      events say exactly what moved.
contract InvariantTest {
    Handler internal h;

    function setUp() public {
        h = new Handler();
        h.setUp();
    }

    function targetContracts() public view returns (address[] memory t) {
        t = new address[](1);
        t[0] = address(h);
    }

    function targetSelectors() public view returns (FuzzSelector[] memory s) {
        s = new FuzzSelector[](1);
        s[0] = FuzzSelector(address(h), actions());
    }

    /// JobMarket holds exactly the open escrow (less keeper rewards paid), the credits and the burned stake.
    function invariant_MarketHoldsEscrowCreditsAndBurned() public view {
        (address market,) = h.contracts();
        address[] memory a = h.accounts();
        uint256 credits;
        for (uint256 i; i < a.length; ++i) credits += JobMarket(payable(market)).creditsOf(a[i]);
        require(market.balance == h.openEscrow() + credits + JobMarket(payable(market)).burned(), "market balance");
    }

    /// NodeRegistry holds exactly stake plus earnings; no node withdrew more than it earned.
    function invariant_RegistryHoldsStakeAndEarnings() public view {
        (, address nodes) = h.contracts();
        uint256 sum;
        for (uint256 i; i < h.everyoneCount(); ++i) {
            (address n, uint256 stake, uint256 earn) = h.nodeBooks(i);
            sum += stake + earn;
            require(h.earningsWithdrawn(n) + earn == h.earned(n), "a node withdrew more than it earned");
        }
        require(nodes.balance == sum, "registry balance");
    }

    /// Nobody profits from another's failure: a requester never gets back more than it paid.
    function invariant_NoRequesterGetsBackMoreThanItPaid() public view {
        address[] memory a = h.accounts();
        for (uint256 i; i < 3; ++i) require(h.granted(a[i]) <= h.feesPaid(a[i]), "a requester profited");
        require(h.granted(a[5]) <= h.feesPaid(a[5]), "a requester profited");
    }

    /// Every settlement's JobFinalized/DisputeSettled say exactly what was credited, slashed, refunded, burned.
    function invariant_EventsAreWhatMoved() public view {
        string memory why = h.wrong();
        require(bytes(why).length == 0, why);
    }

    function actions() internal view returns (bytes4[] memory s) {
        s = new bytes4[](9);
        (s[0], s[1], s[2], s[3], s[4]) = (h.submitJob.selector, h.commitSome.selector, h.revealSome.selector,
            h.settleSome.selector, h.attestSome.selector);
        (s[5], s[6], s[7], s[8]) = (h.warp.selector, h.nodeLife.selector, h.withdrawCredits.selector, h.misuse.selector);
    }
}

/// @dev The handler reaches every custom error of the four contracts (and JobPlan).
contract ErrorCoverageTest {
    function test_HandlerReachesEveryCustomError() public {
        Handler h = new Handler();
        h.setUp();
        // job by job: submitted, committed, revealed, settled, disputed, attested, out of time;
        // the handler tries the misuse that belongs to each step (js 0: the latest job)
        for (uint256 i; i < 120; ++i) {
            uint256 seed = uint256(keccak256(abi.encode(i)));
            h.submitJob(seed);
            h.revealSome(0, seed); // nothing committed yet
            h.commitSome(0, seed);
            h.settleSome(0, seed << 9); // too early to finalize
            h.revealSome(0, seed >> 1);
            h.warp(seed % 8 == 0 ? 1 : 25);
            h.commitSome(0, seed >> 2);
            h.revealSome(0, seed >> 3);
            h.warp(400); // past the reveal deadline or close to it
            h.settleSome(0, seed << 9); // finalize: fast path or dispute
            h.settleSome(0, (seed << 9) | 1); // at once: the seed block is not mined yet
            h.warp(1);
            h.settleSome(0, seed << 9); // draw (or finalize an attesting job)
            h.attestSome(0, seed >> 4);
            h.settleSome(0, seed >> 5);
            h.warp(seed % 3 == 0 ? 8 : 9); // 8: past every grace
            h.attestSome(0, seed >> 6);
            h.settleSome(0, seed >> 7);
            h.nodeLife(seed, seed >> 8);
            h.withdrawCredits(seed >> 9);
            h.misuse(seed >> 10);
        }
        bytes4[] memory all = everyError();
        bytes memory missing;
        for (uint256 i; i < all.length; ++i) {
            if (!h.seen(all[i])) missing = abi.encodePacked(missing, " #", bytes1(uint8(48 + i / 10)), bytes1(uint8(48 + i % 10)));
        }
        require(missing.length == 0, string(abi.encodePacked("errors never reached (index in everyError):", missing)));
        require(h.seenCount() == all.length, "the handler reached an error not in the list");
    }

    function everyError() internal pure returns (bytes4[] memory e) {
        bytes4[64] memory a = [
            JobPlan.JobPlanBadReplicas.selector, JobPlan.JobPlanHopJunk.selector, JobPlan.JobPlanGap.selector,
            JobPlan.JobPlanOverlap.selector, JobPlan.JobPlanEmptyHop.selector, JobPlan.JobPlanPastEnd.selector,
            JobPlan.JobPlanBadStandby.selector, JobPlan.JobPlanTooManyHops.selector, JobPlan.JobPlanIncomplete.selector,
            JobPlan.JobPlanNodeReused.selector,
            JobMarket.JobBadRequest.selector, JobMarket.JobBadParam.selector, JobMarket.JobBadWindows.selector,
            JobMarket.JobFeeTooLow.selector, JobMarket.JobBadReplica.selector, JobMarket.JobNotTail.selector,
            JobMarket.JobCommitClosed.selector, JobMarket.JobAlreadyCommitted.selector,
            JobMarket.JobAlreadyRevealed.selector, JobMarket.JobRevealNotOpen.selector,
            JobMarket.JobRevealClosed.selector, JobMarket.JobNotCommitted.selector, JobMarket.JobBadReveal.selector,
            JobStore.JobBadConfig.selector, JobStore.JobUnknown.selector, JobStore.JobPlanMismatch.selector,
            JobStore.JobNotFinalizable.selector, JobStore.JobAlreadyFinalized.selector,
            JobStore.JobSeedNotReady.selector, JobStore.JobAwaitingVerifiers.selector,
            JobStore.JobNotDisputed.selector, JobStore.JobNothingToWithdraw.selector,
            JobStore.JobTransferFailed.selector, JobStore.JobOnlyNodeRegistry.selector,
            NodeBook.NodeStakeTooLow.selector, NodeBook.NodeAlreadyRegistered.selector,
            NodeBook.NodeUnknown.selector, NodeBook.NodeBadSpan.selector, NodeBook.NodeBadCaps.selector,
            NodeBook.NodeIsUnbonding.selector, NodeBook.NodeNotUnbonding.selector,
            NodeBook.NodeStillBonded.selector, NodeBook.NodeNothingToWithdraw.selector,
            NodeBook.NodeOnlyJobMarket.selector, NodeBook.NodeTransferFailed.selector,
            NodeBook.NodeNotActive.selector, NodeBook.NodeWrongModel.selector,
            NodeBook.NodeSpanNotServed.selector, NodeBook.NodeSpecNotServed.selector,
            NodeBook.NodeBadSetup.selector,
            ModelRegistry.ModelAlreadyRegistered.selector, ModelRegistry.ModelUnknown.selector,
            ModelRegistry.ModelNotPublisher.selector, ModelRegistry.ModelIsDeprecated.selector,
            ModelRegistry.ModelInvalid.selector,
            Disputes.DisputeNotOpen.selector, Disputes.DisputeNotVerifier.selector,
            Disputes.DisputeAlreadyAttested.selector, Disputes.DisputeAttestClosed.selector,
            Disputes.DisputeBadVerdicts.selector, Disputes.DisputeBadVerdict.selector,
            Disputes.DisputeStillOpen.selector, Disputes.DisputeOnlyJobMarket.selector,
            Disputes.DisputeBadSetup.selector
        ];
        e = new bytes4[](64);
        for (uint256 i; i < 64; ++i) e[i] = a[i];
    }
}
