// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {NodeBook} from "../src/NodeBook.sol";
import {Disputes} from "../src/Disputes.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {JobStore} from "../src/JobStore.sol";
import {JobPlan} from "../src/JobPlan.sol";

/// @dev The contracts issue's findings, one test each. Commit 2b6c5cc holds the same tests written
///      against the v1 ABI, where all nine fail; these are their v2 form.
contract FindingsTest is Base {
    bytes internal constant OUT = hex"00000001";
    bytes internal constant BAD = hex"00000002";

    /// 1. A requester's silent replica + revealWindow = 1 no longer takes an honest tail's slash.
    function test_Finding1_RequesterCannotTakeAnHonestSlash() public {
        JobMarket.JobParams memory p = params();
        p.revealWindow = 1;
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobBadWindows.selector, 100, 1, MIN_WINDOW, MIN_WINDOW, MAX_JOB));
        market.submitJob{value: 1 ether}(modelId, plan3x3(), p);
        // even when the honest tail misses the (minimum) window, its slash is burned, not credited
        uint256 fee = 1 ether;
        uint256 id = submit(fee);
        doCommit(id, 0, OUT, fee); // replicas 1 and 2 are the requester's: they never commit
        vm.warp(block.timestamp + 100 + MIN_WINDOW + 1 + 100);
        fin(id, fee);
        require(nodes.getNode(node[2]).stake == MIN_STAKE - SLASH, "the silent committer is slashed");
        require(market.burned() == SLASH, "its stake is burned");
        require(market.creditsOf(requester) == fee, "the requester gets its fee back and nothing more");
    }

    /// 2. Two replicas of the requester no longer outvote an honest one: divergence goes to verifiers
    ///    drawn by the contract.
    function test_Finding2_SybilMajorityCannotHurtTheHonestReplica() public {
        address[3] memory full = [fullNode(0), fullNode(1), fullNode(2)];
        uint8[] memory verdicts = new uint8[](3);
        (verdicts[0], verdicts[1], verdicts[2]) = (1, 2, 2); // replicas 1, 2: their first served hop is faulty
        for (uint256 k; k < 3; ++k) {
            uint256 id = submit(1 ether);
            for (uint256 r; r < 3; ++r) doCommit(id, r, r == 0 ? OUT : BAD, 1 ether);
            for (uint256 r; r < 3; ++r) doReveal(id, r, r == 0 ? OUT : BAD);
            fin(id, 1 ether);
            vm.roll(block.number + 2);
            market.drawVerifiers(id, plan3x3(), terms(1 ether));
            for (uint256 i; i < 3; ++i) {
                vm.prank(full[i]);
                disputes.attest(id, verdicts);
            }
            fin(id, 1 ether);
            for (uint256 i = 3; i < 9; ++i) {
                vm.prank(node[i]); // the requester keeps its slashed sybils staked
                nodes.addStake{value: SLASH}();
            }
        }
        require(nodes.getNode(node[0]).reputation > 1e18, "honest reputation rose");
        require(earnings(node[0]) > 0 && earnings(node[3]) == 0, "the honest replica is paid, the sybils are not");
        require(market.burned() == 0 && earnings(full[0]) > 0, "their stake went to the verifiers");
    }

    /// 3. Prices, sizes and codecs are enforced.
    function test_Finding3_PricesSizesAndCodecsAreEnforced() public {
        address pricey = vm.addr(901);
        vm.deal(pricey, 10 ether);
        vm.prank(pricey);
        nodes.register{value: MIN_STAKE}(modelId, 0, 30, "x", address(0), 1, 1e15, ALL_CAPS);
        uint256[] memory h = new uint256[](1);
        h[0] = hop(pricey, 0, 30, 0);
        JobMarket.JobParams memory p = params();
        p.maxTokens = type(uint32).max;
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobBadParam.selector, "maxTokens", type(uint32).max, 1, 4096));
        market.submitJob{value: 1}(modelId, h, p);
        p.maxTokens = 4;
        uint256 floor = market.feeFloor(modelId, h, 4, 0, 0);
        require(floor >= 1e15 * 30 * 4, "the floor covers the node's ask");
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobFeeTooLow.selector, 1, floor));
        market.submitJob{value: 1}(modelId, h, p);
        p.codec = 200;
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobBadParam.selector, "codec", 200, 0, 5));
        market.submitJob{value: floor}(modelId, h, p);
    }

    /// 4. Reading one model's nodes costs its nodes, not every registration ever made.
    function test_Finding4_NodesOfCostsItsModelNotTheWorld() public {
        for (uint256 i; i < 528; ++i) {
            address n = vm.addr(10_000 + i);
            vm.deal(n, 2 ether);
            bytes32 m = i < 8 ? modelId : models.registerModel(decimal(i), 30, 1, bytes32(i), 0, 0);
            vm.prank(n);
            nodes.register{value: MIN_STAKE}(m, 0, 30, "x", address(0), 1, 1, ALL_CAPS);
        }
        uint256 g = gasleft();
        nodes.nodesOf(modelId, 0, 100); // 17 nodes
        require(g - gasleft() < 500_000, "nodesOf walks the global list");
    }

    /// 5. A name is owned per publisher: a squat does not block anyone else's model.
    function test_Finding5_NamesCannotBeSquatted() public {
        vm.prank(address(0x5017));
        models.registerModel("digits-cnn", 5, 1, 0, 0, 0);
        bytes32 ours = models.registerModel("digits-cnn", 5, 1, 0, 0, 0);
        require(models.getModel(ours).publisher == address(this), "the project registers its own digits-cnn");
    }

    /// 6. Unbonding must outlast a job's whole lifetime; a node unbonding at submission is still
    ///    slashable when the job settles.
    function test_Finding6_UnbondingMustOutlastAJob() public {
        NodeRegistry reg = new NodeRegistry(models, MIN_STAKE, MAX_JOB, SLASH);
        Disputes d = new Disputes(reg, 3);
        uint256 lifetime = uint256(MAX_JOB) + ATTEST + 3 * uint256(GRACE);
        vm.expectRevert(abi.encodeWithSelector(JobStore.JobBadConfig.selector, "unbondingPeriod", MAX_JOB, lifetime));
        new JobMarket(models, reg, d, config());
        uint256 id = submit(1 ether);
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, 1 ether);
        vm.prank(node[8]);
        nodes.requestUnbond(); // in the job's block: the silent tail tries to leave with its stake
        doReveal(id, 0, OUT);
        doReveal(id, 1, OUT);
        uint256 unbondAt = nodes.getNode(node[8]).unbondAt;
        vm.warp(unbondAt - 1);
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeStillBonded.selector, node[8], unbondAt, unbondAt - 1));
        nodes.withdrawStake(node[8]);
        fin(id, 1 ether); // long since finalizable (and paying a keeper)
        require(nodes.getNode(node[8]).stake == MIN_STAKE - SLASH, "slashed before it could leave");
    }

    /// 7. The payout address can be changed.
    function test_Finding7_PayoutCanBeChanged() public {
        vm.prank(node[0]);
        nodes.setPayout(address(0xCA5E));
        require(nodes.getNode(node[0]).payout == address(0xCA5E), "payout changed");
    }

    /// 8. Exact errors, and hops with junk bits refused.
    function test_Finding8_ExactErrors() public {
        uint256[] memory h = plan3x3();
        h[1] = hop(node[1], 10, 10, 0);
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobPlan.JobPlanEmptyHop.selector, 0, 1, uint16(10), uint16(10)));
        market.submitJob{value: 1 ether}(modelId, h, params());
        h = plan3x3();
        h[0] |= uint256(1) << 250;
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobPlan.JobPlanHopJunk.selector, 0, h[0]));
        market.submitJob{value: 1 ether}(modelId, h, params());
        bytes32 other = models.registerModel("other", 30, 4096, 0, 0, 0);
        h = plan3x3();
        h[1] = hop(node[1], 0, 30, 0); // node[1] serves [10,20) of "m", not "other"
        h[2] = hop(node[2], 30, 30, 0);
        uint256[] memory one = new uint256[](1);
        one[0] = hop(node[1], 0, 30, 0);
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeWrongModel.selector, node[1], other, modelId));
        market.submitJob{value: 1 ether}(other, one, params());
        uint256 id = submit(1 ether);
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, 1 ether);
        vm.prank(node[0]); // replays replica 0's reveal
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobNotTail.selector, id, 0, node[0], node[2]));
        market.reveal(id, 0, OUT, 0, ALL3, SALT);
    }

    /// 9. submitJob gas is linear in hops.
    function test_Finding9_SubmitGasIsLinearInHops() public {
        bytes32 m = models.registerModel("wide", 64, 1, 0, 0, 0);
        uint256[] memory big = new uint256[](512);
        for (uint256 i; i < 512; ++i) {
            address n = vm.addr(20_000 + i);
            vm.deal(n, 2 ether);
            vm.prank(n);
            nodes.register{value: MIN_STAKE}(m, uint16(i % 64), uint16(i % 64 + 1), "x", address(0), 1, 1, ALL_CAPS);
            big[i] = hop(n, i % 64, i % 64 + 1, i / 64);
        }
        uint256[] memory small = new uint256[](64);
        for (uint256 i; i < 64; ++i) small[i] = big[i];
        JobMarket.JobParams memory p = params();
        p.maxTokens = 1;
        vm.startPrank(requester);
        uint256 g = gasleft();
        market.submitJob{value: 1 ether}(m, small, p);
        uint256 g64 = g - gasleft();
        g = gasleft();
        market.submitJob{value: 1 ether}(m, big, p);
        uint256 g512 = g - gasleft();
        vm.stopPrank();
        require(g512 < 9 * g64, "512 hops cost more than 9x 64 hops");
    }

    function decimal(uint256 i) internal pure returns (string memory) {
        bytes memory b = new bytes(6);
        for (uint256 k; k < 6; ++k) b[5 - k] = bytes1(uint8(48 + (i / 10 ** k) % 10));
        return string(b);
    }
}
