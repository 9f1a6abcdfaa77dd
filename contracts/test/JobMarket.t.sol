// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {JobPlan} from "../src/JobPlan.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";

contract JobMarketTest is Base {
    bytes internal constant OUT = hex"0000000100000002";
    bytes internal constant BAD = hex"0000000100000003";

    function test_Majority3of3PaysEveryNodeByBlocks() public {
        uint256 fee = 1 ether + 7; // 7 wei of dust
        uint256 id = submit(fee);
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, fee);
        for (uint256 r; r < 3; ++r) doReveal(id, r, OUT);
        market.finalize(id, modelId, fee, plan3x3());
        uint256 share = fee / 90 * 10;
        for (uint256 i; i < 9; ++i) {
            if (i == 2) require(earnings(node[i]) == share + fee - 9 * share, "dust to the first tail");
            else require(earnings(node[i]) == share, "pro rata");
            require(nodes.getNode(node[i]).reputation == 1.01e18, "rep up");
        }
        require(address(market).balance == 0, "escrow released");
    }

    function test_FinalizedEventEqualsCreditedEarningsWithDust() public {
        uint256 fee = 1 ether + 7; // 7 wei of dust
        uint256 id = submit(fee);
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, fee);
        for (uint256 r; r < 3; ++r) doReveal(id, r, OUT);
        Books memory before = books();
        Finalized memory f = finalizeRecorded(id, fee);
        string memory why = eventMismatch(f, before, fee);
        require(bytes(why).length == 0, why);
        require(f.outcome == 1 && f.winnersMask == 7 && f.outputHash == keccak256(OUT) && f.refund == 0, "header");
        uint256 share = fee / 90 * 10;
        for (uint256 i; i < 9; ++i) {
            require(f.outcomes[i] == 1, "every hop paid");
            require(f.paid[i] == (i == 2 ? share + fee - 9 * share : share), "pro rata, dust to the first tail");
        }
    }

    function test_FinalizedEventReportsSlashedTailAndItsStake() public {
        uint256 fee = 1 ether + 5; // dust with 2 winners
        uint256 id = submit(fee);
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, fee);
        doReveal(id, 0, OUT);
        doReveal(id, 1, OUT);
        vm.warp(block.timestamp + 201);
        Books memory before = books();
        Finalized memory f = finalizeRecorded(id, fee);
        string memory why = eventMismatch(f, before, fee);
        require(bytes(why).length == 0, why);
        require(f.outcome == 1 && f.winnersMask == 3, "majority of two");
        for (uint256 i; i < 6; ++i) require(f.outcomes[i] == 1 && f.paid[i] != 0, "winners paid");
        require(f.paid[2] == fee / 60 * 10 + fee - 6 * (fee / 60 * 10), "dust to the first tail");
        require(f.outcomes[6] == 0 && f.outcomes[7] == 0, "upstream hops of the silent replica untouched");
        require(f.outcomes[8] == 3 && f.slashed[8] == SLASH && f.paid[8] == 0, "silent tail slashed");
        require(market.creditsOf(requester) == SLASH, "slash credited to the requester");
    }

    function test_FinalizedEventReportsLosersAsFailed() public {
        uint256 id = submit(0.9 ether);
        for (uint256 r; r < 3; ++r) doCommit(id, r, r == 1 ? BAD : OUT, 0.9 ether);
        for (uint256 r; r < 3; ++r) doReveal(id, r, r == 1 ? BAD : OUT);
        Books memory before = books();
        Finalized memory f = finalizeRecorded(id, 0.9 ether);
        string memory why = eventMismatch(f, before, 0.9 ether);
        require(bytes(why).length == 0, why);
        for (uint256 i = 3; i < 6; ++i) require(f.outcomes[i] == 2 && f.paid[i] == 0, "loser failed, unpaid");
        require(f.paid[0] == 0.15 ether, "winner paid");
    }

    function test_FinalizedEventOnRefundWithTwoSlashedTails() public {
        uint256 id = submit(1 ether);
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, 1 ether);
        doReveal(id, 0, OUT); // one of three is no majority
        vm.warp(block.timestamp + 201);
        Books memory before = books();
        Finalized memory f = finalizeRecorded(id, 1 ether);
        string memory why = eventMismatch(f, before, 1 ether);
        require(bytes(why).length == 0, why);
        require(f.outcome == 2 && f.winnersMask == 0 && f.refund == 1 ether && f.outputHash == 0, "refund");
        for (uint256 i; i < 9; ++i) {
            bool silentTail = i == 5 || i == 8;
            require(f.outcomes[i] == (silentTail ? 3 : 0), "only the silent tails are judged");
            require(f.slashed[i] == (silentTail ? SLASH : 0), "their stake is taken");
        }
        require(market.creditsOf(requester) == 1 ether + 2 * SLASH, "fee and slashes credited");
    }

    /// @dev behaviour per replica (2 bits each): 0 reveals OUT, 1 reveals BAD, 2 commits only, 3 silent
    function testFuzz_FinalizedEventEqualsWhatTheChainCredited(uint96 seed, uint8 behaviour) public {
        uint256 fee = uint256(seed) % 500 ether + 1;
        uint256 id = submit(fee);
        for (uint256 r; r < 3; ++r) {
            uint256 b = (behaviour >> (2 * r)) & 3;
            if (b != 3) doCommit(id, r, b == 1 ? BAD : OUT, fee);
        }
        vm.warp(block.timestamp + 101);
        for (uint256 r; r < 3; ++r) {
            uint256 b = (behaviour >> (2 * r)) & 3;
            if (b < 2) doReveal(id, r, b == 1 ? BAD : OUT);
        }
        vm.warp(block.timestamp + 100);
        Books memory before = books();
        Finalized memory f = finalizeRecorded(id, fee);
        string memory why = eventMismatch(f, before, fee);
        require(bytes(why).length == 0, why);
    }

    function test_2of3LoserLosesReputation() public {
        uint256 id = submit(0.9 ether);
        doCommit(id, 0, OUT, 0.9 ether);
        doCommit(id, 1, BAD, 0.9 ether);
        doCommit(id, 2, OUT, 0.9 ether);
        for (uint256 r; r < 3; ++r) doReveal(id, r, r == 1 ? BAD : OUT);
        market.finalize(id, modelId, 0.9 ether, plan3x3());
        require(earnings(node[3]) == 0 && nodes.getNode(node[3]).reputation == 0.8e18, "loser");
        require(earnings(node[0]) == 0.15 ether && nodes.getNode(node[0]).reputation == 1.01e18, "winner");
    }

    function test_NoMajorityRefunds() public {
        uint256 id = submit(1 ether);
        doCommit(id, 0, OUT, 1 ether);
        doCommit(id, 1, BAD, 1 ether);
        doCommit(id, 2, hex"00", 1 ether);
        doReveal(id, 0, OUT);
        doReveal(id, 1, BAD);
        doReveal(id, 2, hex"00");
        market.finalize(id, modelId, 1 ether, plan3x3());
        require(market.creditsOf(requester) == 1 ether, "refund");
        require(nodes.getNode(node[0]).reputation == 1e18, "no evidence, no penalty");
        vm.prank(requester);
        market.withdraw();
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobNothingToWithdraw.selector, requester));
        market.withdraw();
    }

    function test_CommittedButUnrevealedTailIsSlashed() public {
        uint256 id = submit(1 ether);
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, 1 ether);
        doReveal(id, 0, OUT);
        doReveal(id, 1, OUT);
        vm.warp(block.timestamp + 201);
        market.finalize(id, modelId, 1 ether, plan3x3());
        require(nodes.getNode(node[8]).stake == MIN_STAKE - SLASH, "slashed");
        require(nodes.getNode(node[8]).status == 4, "understaked");
        require(nodes.getNode(node[6]).stake == MIN_STAKE, "upstream hops untouched");
        require(market.creditsOf(requester) == SLASH, "slash to requester");
    }

    function test_NothingByDeadlineRefunds() public {
        uint256 id = submit(1 ether);
        vm.expectRevert(
            abi.encodeWithSelector(JobMarket.JobNotFinalizable.selector, id, block.timestamp + 200, block.timestamp)
        );
        market.finalize(id, modelId, 1 ether, plan3x3());
        vm.warp(block.timestamp + 201);
        market.finalize(id, modelId, 1 ether, plan3x3());
        require(market.creditsOf(requester) == 1 ether, "refund");
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobAlreadyFinalized.selector, id));
        market.finalize(id, modelId, 1 ether, plan3x3());
    }

    function testFuzz_OnlyTailCommitsOrReveals(address caller) public {
        vm.assume(caller != node[2]);
        uint256 id = submit(1 ether);
        vm.prank(caller);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobNotTail.selector, id, 0, caller, node[2]));
        market.commit(id, 0, bytes32(uint256(1)), modelId, 1 ether, plan3x3());
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, 1 ether);
        vm.prank(caller);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobBadReveal.selector, id, 0));
        market.reveal(id, 0, OUT, bytes32(uint256(7)));
    }

    function testFuzz_PayoutsSumToFee(uint96 seed) public {
        uint256 fee = uint256(seed) % 500 ether + 1;
        uint256 id = submit(fee);
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, fee);
        for (uint256 r; r < 3; ++r) doReveal(id, r, OUT);
        market.finalize(id, modelId, fee, plan3x3());
        uint256 sum;
        for (uint256 i; i < 9; ++i) sum += earnings(node[i]);
        require(sum == fee && address(market).balance == 0, "every wei paid");
    }

    function test_RevertWhen_FeeAboveUint96() public {
        vm.deal(requester, 2 ** 97);
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobBadRequest.selector, "fee above 2^96 wei"));
        market.submitJob{value: 2 ** 96}(modelId, plan3x3(), params());
    }

    function test_RevertWhen_PlanHasGap() public {
        uint256[] memory h = plan3x3();
        h[1] = hop(node[1], 11, 20, 0);
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobPlan.JobPlanGap.selector, 0, 1, uint16(10), uint16(11)));
        market.submitJob{value: 1}(modelId, h, params());
    }

    function test_RevertWhen_PlanOverlaps() public {
        uint256[] memory h = plan3x3();
        h[1] = hop(node[1], 9, 20, 0);
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobPlan.JobPlanOverlap.selector, 0, 1, uint16(10), uint16(9), uint16(20)));
        market.submitJob{value: 1}(modelId, h, params());
    }

    function test_RevertWhen_NodeReusedAcrossReplicas() public {
        uint256[] memory h = plan3x3();
        h[3] = hop(node[0], 0, 10, 1);
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobPlan.JobPlanNodeReused.selector, node[0]));
        market.submitJob{value: 1}(modelId, h, params());
    }

    function test_RevertWhen_NodeDoesNotServeSpan() public {
        uint256[] memory h = plan3x3();
        h[0] = hop(node[1], 0, 10, 0);
        h[1] = hop(node[0], 10, 20, 0);
        vm.prank(requester);
        vm.expectRevert(
            abi.encodeWithSelector(NodeRegistry.NodeSpanNotServed.selector, node[1], uint16(0), uint16(10), uint16(10), uint16(20))
        );
        market.submitJob{value: 1}(modelId, h, params());
    }

    function test_RevertWhen_CommitAfterReveal() public {
        uint256 id = submit(1 ether);
        doCommit(id, 0, OUT, 1 ether);
        doCommit(id, 1, OUT, 1 ether);
        vm.warp(block.timestamp + 101);
        doReveal(id, 0, OUT);
        vm.expectRevert(
            abi.encodeWithSelector(JobMarket.JobCommitClosed.selector, id, block.timestamp - 1, block.timestamp)
        );
        doCommit(id, 2, OUT, 1 ether);
    }

    function test_ReputationClampsAtTen() public {
        for (uint256 k; k < 240; ++k) {
            uint256 id = submit(1 ether);
            for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, 1 ether);
            for (uint256 r; r < 3; ++r) doReveal(id, r, OUT);
            market.finalize(id, modelId, 1 ether, plan3x3());
        }
        require(nodes.getNode(node[0]).reputation == 10e18, "clamped");
    }
}
