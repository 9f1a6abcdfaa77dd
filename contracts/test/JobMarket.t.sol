// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {JobStore} from "../src/JobStore.sol";
import {JobPlan} from "../src/JobPlan.sol";
import {NodeBook} from "../src/NodeBook.sol";

contract JobMarketTest is Base {
    bytes internal constant OUT = hex"0000000100000002";
    bytes internal constant BAD = hex"0000000100000003";

    function test_AgreementPaysServedHopsByPriceAndRefundsTheRest() public {
        uint256 fee = 1 ether + 7;
        uint256 id = submit(fee);
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, fee);
        for (uint256 r; r < 3; ++r) doReveal(id, r, OUT);
        Books memory before = books();
        Finalized memory f = finalizeRecorded(id, fee);
        string memory why = eventMismatch(f, before, fee);
        require(bytes(why).length == 0, why);
        uint256 share = (fee - fee / 10) / 9; // equal prices and blocks: a ninth of the node pool
        for (uint256 i; i < 9; ++i) {
            require(f.outcomes[i] == 1 && f.paid[i] == share, "every served hop paid its share");
            require(nodes.getNode(node[i]).reputation == 1.01e18, "rep up");
        }
        require(f.outcome == 1 && f.paidMask == 7 && f.refund == fee - 9 * share && f.burned == 0, "header");
        require(market.creditsOf(requester) == fee - 9 * share, "reserve and dust refunded");
        require(address(market).balance == fee - 9 * share, "escrow released, refund credited");
    }

    function test_DearerNodeEarnsMoreUnusedPartRefunded() public {
        address dear = vm.addr(700);
        vm.deal(dear, 10 ether);
        vm.prank(dear);
        nodes.register{value: MIN_STAKE}(modelId, 0, 30, "d", address(0), 1, 3 * PRICE, ALL_CAPS);
        uint256[] memory h = new uint256[](1);
        h[0] = hop(dear, 0, 30, 0);
        uint256 floor = market.feeFloor(modelId, h, 4, 0, 0);
        require(floor == (3 * PRICE * 30 * 4 * 10_000 + 8999) / 9000, "ask / (1 - reserve), rounded up");
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobFeeTooLow.selector, floor - 1, floor));
        market.submitJob{value: floor - 1}(modelId, h, params());
        vm.prank(requester);
        uint256 id = market.submitJob{value: floor}(modelId, h, params());
        JobStore.Terms memory t = JobStore.Terms(requester, modelId, floor, 3 * uint256(PRICE) * 30, new uint256[](1));
        t.prices[0] = 3 * PRICE;
        vm.prank(dear);
        commitTo(id, 0, commitment(id, 0, OUT, 1), h, digestOf(t));
        vm.prank(dear);
        market.reveal(id, 0, OUT, 0, 1, SALT);
        market.finalize(id, h, t);
        require(earnings(dear) >= 3 * PRICE * 30 * 4, "the node got at least its ask");
    }

    function test_SilentTailIsSlashedAndTheStakeBurnedNotCredited() public {
        uint256 fee = 1 ether + 5;
        uint256 id = submit(fee);
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, fee);
        doReveal(id, 0, OUT);
        doReveal(id, 1, OUT);
        vm.warp(block.timestamp + 201);
        Books memory before = books();
        Finalized memory f = finalizeRecorded(id, fee);
        string memory why = eventMismatch(f, before, fee);
        require(bytes(why).length == 0, why);
        require(f.outcome == 1 && f.paidMask == 3, "the two revealed replicas are paid");
        require(f.outcomes[6] == 0 && f.outcomes[7] == 0, "upstream hops of the silent replica untouched");
        require(f.outcomes[8] == 3 && f.slashed[8] == SLASH && f.burned == SLASH, "silent tail slashed, burned");
        require(market.burned() == SLASH, "burned counter");
        require(nodes.getNode(node[8]).status == 4, "understaked");
        require(f.refund == fee - 6 * ((fee - fee / 10) / 9), "the silent replica's pay goes back to the requester");
    }

    function test_NothingByDeadlineRefundsEverything() public {
        uint256 id = submit(1 ether);
        vm.expectRevert(
            abi.encodeWithSelector(JobStore.JobNotFinalizable.selector, id, block.timestamp + 200, block.timestamp)
        );
        fin(id, 1 ether);
        vm.warp(block.timestamp + 201);
        Finalized memory f = finalizeRecorded(id, 1 ether);
        require(f.outcome == 3 && f.refund == 1 ether && market.creditsOf(requester) == 1 ether, "refund");
        vm.expectRevert(abi.encodeWithSelector(JobStore.JobAlreadyFinalized.selector, id));
        fin(id, 1 ether);
        vm.prank(requester);
        market.withdraw();
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobStore.JobNothingToWithdraw.selector, requester));
        market.withdraw();
    }

    function test_StandbyOfTheTailTakesOverAndIsPaid() public {
        address sb = vm.addr(701);
        vm.deal(sb, 10 ether);
        vm.prank(sb);
        nodes.register{value: MIN_STAKE}(modelId, 20, 30, "s", address(0), 1, PRICE, ALL_CAPS);
        uint256[] memory h = new uint256[](4);
        for (uint256 i; i < 3; ++i) h[i] = hop(node[i], 10 * i, 10 * i + 10, 0);
        h[3] = standby(sb, 20, 30, 0);
        vm.prank(requester);
        uint256 id = market.submitJob{value: 1 ether}(modelId, h, params());
        JobStore.Terms memory t = JobStore.Terms(requester, modelId, 1 ether, 30 * uint256(PRICE), prices(4));
        uint64 route = 0xb; // words 0, 1 and 3: the standby served the tail's span
        vm.prank(node[0]);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobNotTail.selector, id, 0, node[0], node[2]));
        commitTo(id, 0, commitment(id, 0, OUT, route), h, digestOf(t));
        vm.prank(sb);
        commitTo(id, 0, commitment(id, 0, OUT, route), h, digestOf(t));
        vm.prank(node[2]); // the tail replays the standby's reveal: not the committer
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobNotTail.selector, id, 0, node[2], sb));
        market.reveal(id, 0, OUT, 0, route, SALT);
        vm.prank(sb);
        market.reveal(id, 0, OUT, 0, route, SALT);
        market.finalize(id, h, t);
        uint256 share = (1 ether - 0.1 ether) / 3;
        require(earnings(sb) == share && earnings(node[2]) == 0 && earnings(node[0]) == share, "the standby is paid");
    }

    function test_RevealOfAnInvalidRouteSlashesTheCommitter() public {
        uint256 id = submit(1 ether);
        vm.prank(node[2]);
        commitTo(id, 0, commitment(id, 0, OUT, 3), plan3x3(), digest(1 ether)); // skips its own word
        vm.warp(block.timestamp + 101);
        vm.prank(node[2]);
        market.reveal(id, 0, OUT, 0, 3, SALT);
        vm.warp(block.timestamp + 100);
        Finalized memory f = finalizeRecorded(id, 1 ether);
        require(f.outcomes[2] == 3 && f.slashed[2] == SLASH && f.paidMask == 0 && f.outcome == 3, "slashed, unpaid");
    }

    /// @dev behaviour per replica (2 bits each): 0 reveals OUT, 1 reveals BAD, 2 commits only, 3 silent
    function testFuzz_FastPathEventEqualsWhatTheChainCredited(uint96 seed, uint8 behaviour) public {
        uint256 fee = uint256(seed) % 500 ether + 1 ether;
        uint256 id = submit(fee);
        bool revealsBad;
        bool revealsGood;
        for (uint256 r; r < 3; ++r) {
            uint256 b = (behaviour >> (2 * r)) & 3;
            if (b != 3) doCommit(id, r, b == 1 ? BAD : OUT, fee);
        }
        vm.warp(block.timestamp + 101);
        for (uint256 r; r < 3; ++r) {
            uint256 b = (behaviour >> (2 * r)) & 3;
            if (b < 2) doReveal(id, r, b == 1 ? BAD : OUT);
            revealsBad = revealsBad || b == 1;
            revealsGood = revealsGood || b == 0;
        }
        vm.warp(block.timestamp + 100);
        vm.assume(!(revealsBad && revealsGood)); // divergence goes to dispute (Disputes.t.sol)
        Books memory before = books();
        Finalized memory f = finalizeRecorded(id, fee);
        string memory why = eventMismatch(f, before, fee);
        require(bytes(why).length == 0, why);
    }

    function test_RevertWhen_CommitOrRevealOutOfTurn() public {
        uint256 id = submit(1 ether);
        vm.prank(node[8]);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobNotCommitted.selector, id, 2));
        market.reveal(id, 2, OUT, 0, ALL3, SALT);
        doCommit(id, 0, OUT, 1 ether);
        doCommit(id, 1, OUT, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobAlreadyCommitted.selector, id, 0));
        doCommit(id, 0, OUT, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobRevealNotOpen.selector, id, block.timestamp + 100, block.timestamp));
        doReveal(id, 0, OUT);
        vm.prank(node[2]);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobBadReplica.selector, id, 5, 3));
        commitTo(id, 5, 0, plan3x3(), digest(1 ether));
        vm.prank(node[5]);
        vm.expectRevert(abi.encodeWithSelector(JobStore.JobPlanMismatch.selector, id));
        commitTo(id, 1, 0, plan3x3(), digest(2 ether));
        vm.warp(block.timestamp + 101);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobCommitClosed.selector, id, block.timestamp - 1, block.timestamp));
        doCommit(id, 2, OUT, 1 ether);
        vm.prank(node[2]);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobBadReveal.selector, id, 0));
        market.reveal(id, 0, BAD, 0, ALL3, SALT);
        vm.prank(node[0]); // a replay of the tail's exact reveal by another node
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobNotTail.selector, id, 0, node[0], node[2]));
        market.reveal(id, 0, OUT, 0, ALL3, SALT);
        doReveal(id, 0, OUT);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobAlreadyRevealed.selector, id, 0));
        doReveal(id, 0, OUT);
        vm.warp(block.timestamp + 100);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobRevealClosed.selector, id, block.timestamp - 1, block.timestamp));
        doReveal(id, 1, OUT);
    }

    function test_RevertWhen_ParamsOutOfRange() public {
        JobMarket.JobParams memory p = params();
        p.codec = 200;
        _expectParam(p, "codec", 200, 0, 5);
        p = params();
        p.maxTokens = 4097;
        _expectParam(p, "maxTokens", 4097, 1, 4096);
        p.maxTokens = 0;
        _expectParam(p, "maxTokens", 0, 1, 4096);
        p = params();
        p.spec = 3;
        _expectParam(p, "dtype", 3, 0, 2);
        p.spec = 2 << 8;
        _expectParam(p, "weights", 2, 0, 1);
        p.spec = 2 << 16;
        _expectParam(p, "mode", 2, 0, 1);
        p.spec = 5 << 24;
        _expectParam(p, "auditBps", 5, 0, 0);
        p.spec = 1001 << 40;
        _expectParam(p, "topPMilli", 1001, 0, 1000);
        p.spec = 10_001 << 56;
        _expectParam(p, "repetitionPenaltyMilli", 10_001, 0, 10_000);
        p.spec = 1_000_001 << 72;
        _expectParam(p, "topK", 1_000_001, 0, 1_000_000);
        p.spec = 1 << 104;
        _expectParam(p, "spec", 1 << 104, 0, (1 << 104) - 1);
        p = params();
        p.temperatureMilli = 10_001;
        _expectParam(p, "temperatureMilli", 10_001, 0, 10_000);
        p = params();
        p.spec = 1 << 16; // optimistic needs one replica
        _expectParam(p, "replicas", 3, 1, 1);
        p = params();
        p.revealWindow = 1;
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobBadWindows.selector, 100, 1, MIN_WINDOW, MIN_WINDOW, MAX_JOB));
        market.submitJob{value: 1 ether}(modelId, plan3x3(), p);
        p.revealWindow = MAX_JOB;
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobBadWindows.selector, 100, MAX_JOB, MIN_WINDOW, MIN_WINDOW, MAX_JOB));
        market.submitJob{value: 1 ether}(modelId, plan3x3(), p);
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobBadRequest.selector, "fee is zero"));
        market.submitJob(modelId, plan3x3(), params());
        p = params();
        p.input = "";
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobBadRequest.selector, "no input"));
        market.submitJob{value: 1 ether}(modelId, plan3x3(), p);
    }

    function _expectParam(JobMarket.JobParams memory p, string memory name, uint256 v, uint256 lo, uint256 hi) internal {
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobBadParam.selector, name, v, lo, hi));
        market.submitJob{value: 1 ether}(modelId, plan3x3(), p);
    }

    function test_RevertWhen_PlanShapeIsWrong() public {
        uint256[] memory h = plan3x3();
        h[1] = hop(node[1], 11, 20, 0);
        _expectPlan(h, abi.encodeWithSelector(JobPlan.JobPlanGap.selector, 0, 1, uint16(10), uint16(11)));
        h = plan3x3();
        h[1] = hop(node[1], 9, 20, 0);
        _expectPlan(h, abi.encodeWithSelector(JobPlan.JobPlanOverlap.selector, 0, 1, uint16(10), uint16(9)));
        h = plan3x3();
        h[1] = hop(node[1], 10, 10, 0);
        _expectPlan(h, abi.encodeWithSelector(JobPlan.JobPlanEmptyHop.selector, 0, 1, uint16(10), uint16(10)));
        h = plan3x3();
        h[2] = hop(node[2], 20, 31, 0);
        _expectPlan(h, abi.encodeWithSelector(JobPlan.JobPlanPastEnd.selector, 0, 2, uint16(31), uint16(30)));
        h = plan3x3();
        h[4] |= uint256(1) << 250;
        _expectPlan(h, abi.encodeWithSelector(JobPlan.JobPlanHopJunk.selector, 4, h[4]));
        h = plan3x3();
        h[3] = hop(node[0], 0, 10, 1);
        _expectPlan(h, abi.encodeWithSelector(JobPlan.JobPlanNodeReused.selector, node[0]));
        h = plan3x3();
        h[3] = standby(node[3], 0, 10, 1); // a replica cannot start with a standby
        _expectPlan(h, abi.encodeWithSelector(JobPlan.JobPlanBadStandby.selector, 1, 3));
        h = plan3x3();
        h[2] = standby(node[2], 0, 10, 0); // not the span of the primary before it
        _expectPlan(h, abi.encodeWithSelector(JobPlan.JobPlanBadStandby.selector, 0, 2));
        h = new uint256[](6);
        for (uint256 i; i < 3; ++i) h[i] = plan3x3()[i];
        for (uint256 i = 3; i < 6; ++i) h[i] = plan3x3()[i + 3];
        h[3] = hop(node[6], 0, 10, 2);
        _expectPlan(h, abi.encodeWithSelector(JobPlan.JobPlanBadReplicas.selector, 3, 2));
        h = new uint256[](2);
        h[0] = hop(node[0], 0, 10, 0);
        h[1] = hop(node[1], 10, 20, 0);
        _expectPlan(h, abi.encodeWithSelector(JobPlan.JobPlanIncomplete.selector, 0, uint16(20), uint16(30)));
        _expectPlan(new uint256[](0), abi.encodeWithSelector(JobPlan.JobPlanBadReplicas.selector, 0, 0));
    }

    function test_RevertWhen_NodesDoNotFit() public {
        uint256[] memory h = plan3x3();
        h[0] = hop(node[1], 0, 10, 0);
        h[1] = hop(node[0], 10, 20, 0);
        _expectPlan(
            h,
            abi.encodeWithSelector(NodeBook.NodeSpanNotServed.selector, node[1], uint16(0), uint16(10), uint16(10), uint16(20))
        );
        vm.prank(node[4]);
        nodes.requestUnbond();
        _expectPlan(plan3x3(), abi.encodeWithSelector(NodeBook.NodeNotActive.selector, node[4], uint8(2)));
        address fp32Only = vm.addr(702);
        vm.deal(fp32Only, 10 ether);
        vm.prank(fp32Only);
        nodes.register{value: MIN_STAKE}(modelId, 0, 30, "f", address(0), 1, PRICE, 1 | 8);
        h = new uint256[](1);
        h[0] = hop(fp32Only, 0, 30, 0);
        JobMarket.JobParams memory p = params();
        p.spec = 1; // bf16
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeSpecNotServed.selector, fp32Only, 1, 0, 1 | 8));
        market.submitJob{value: 1 ether}(modelId, h, p);
    }

    function _expectPlan(uint256[] memory h, bytes memory err) internal {
        vm.prank(requester);
        vm.expectRevert(err);
        market.submitJob{value: 1 ether}(modelId, h, params());
    }

    function test_ReputationClampsAtTen() public {
        for (uint256 k; k < 240; ++k) {
            uint256 id = submit(1 ether);
            for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, 1 ether);
            for (uint256 r; r < 3; ++r) doReveal(id, r, OUT);
            fin(id, 1 ether);
        }
        require(nodes.getNode(node[0]).reputation == 10e18, "clamped");
    }

    function test_RevertWhen_DepositSlashedByOthers() public {
        vm.expectRevert(abi.encodeWithSelector(JobStore.JobOnlyNodeRegistry.selector, address(this)));
        market.depositSlashed{value: 1}();
    }
}
