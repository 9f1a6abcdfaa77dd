// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.sol";
import {ModelRegistry} from "../src/ModelRegistry.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {JobPlan} from "../src/JobPlan.sol";

/// @dev A payout address that refuses ETH.
contract Refuser {
    receive() external payable {
        revert("no");
    }
}

/// @dev The contracts issue's findings, written against the v1 ABI: each asserts the fixed
///      behaviour, so each FAILS on the v1 contracts (kept as the record of what was wrong).
contract FindingsV1Test is Base {
    bytes internal constant OUT = hex"00000001";
    bytes internal constant BAD = hex"00000002";

    function _one(address n, uint256 r) internal pure returns (uint256[] memory h) {
        h = new uint256[](3);
        h[0] = hop(n, 0, 10, r);
    }

    /// 1. A requester's silent replica + revealWindow = 1 takes an honest tail's slash.
    function test_Finding1_RequesterCannotTakeAnHonestSlash() public {
        address evil = vm.addr(900);
        vm.deal(evil, 10 ether);
        vm.prank(evil);
        nodes.register{value: MIN_STAKE}(modelId, 20, 30, "x", address(0), 1, 1);
        uint256[] memory h = new uint256[](6);
        for (uint256 i; i < 3; ++i) h[i] = hop(node[i], 10 * i, 10 * i + 10, 0);
        h[3] = hop(node[3], 0, 10, 1);
        h[4] = hop(node[4], 10, 20, 1);
        h[5] = hop(evil, 20, 30, 1);
        JobMarket.JobParams memory p = params();
        p.revealWindow = 1;
        vm.prank(requester);
        try market.submitJob{value: 1}(modelId, h, p) returns (uint256 id) {
            vm.prank(node[2]);
            market.commit(id, 0, commitment(id, 0, OUT, node[2]), modelId, 1, h);
            vm.warp(block.timestamp + 102); // the honest tail misses the one-second reveal window
            market.finalize(id, modelId, 1, h);
            require(market.creditsOf(requester) <= 1, "requester profited from an honest node's slash");
        } catch {}
    }

    /// 2. Two replicas of the requester outvote an honest one.
    function test_Finding2_SybilMajorityCannotHurtTheHonestReplica() public {
        for (uint256 k; k < 3; ++k) {
            uint256 id = submit(1 ether);
            for (uint256 r; r < 3; ++r) doCommit(id, r, r == 0 ? OUT : BAD, 1 ether);
            for (uint256 r; r < 3; ++r) doReveal(id, r, r == 0 ? OUT : BAD);
            market.finalize(id, modelId, 1 ether, plan3x3());
        }
        require(nodes.getNode(node[0]).reputation >= 1e18, "honest reputation fell");
    }

    /// 3. Fee below the nodes' price, maxTokens past any context and codec 200 are accepted.
    function test_Finding3_PricesSizesAndCodecsAreEnforced() public {
        address pricey = vm.addr(901);
        vm.deal(pricey, 10 ether);
        vm.prank(pricey);
        nodes.register{value: MIN_STAKE}(modelId, 0, 30, "x", address(0), 1, 1e15);
        uint256[] memory h = new uint256[](1);
        h[0] = hop(pricey, 0, 30, 0);
        JobMarket.JobParams memory p = params();
        p.maxTokens = type(uint32).max;
        vm.prank(requester);
        (bool ok,) = address(market).call{value: 1}(abi.encodeCall(market.submitJob, (modelId, h, p)));
        require(!ok, "1 wei accepted for 2^32-1 tokens at 1e15 wei per block-token");
        p.maxTokens = 4;
        p.codec = 200;
        vm.prank(requester);
        (ok,) = address(market).call{value: 1 ether}(abi.encodeCall(market.submitJob, (modelId, h, p)));
        require(!ok, "codec 200 accepted");
    }

    /// 4. Reading one model's nodes walks every registration ever made.
    function test_Finding4_NodesOfCostsItsModelNotTheWorld() public {
        for (uint256 i; i < 528; ++i) {
            address n = vm.addr(10_000 + i);
            vm.deal(n, 2 ether);
            bytes32 m = i < 8 ? modelId : models.registerModel(string(abi.encode(i)), 30, bytes32(i), 0, 0);
            vm.prank(n);
            nodes.register{value: MIN_STAKE}(m, 0, 30, "x", address(0), 1, 1);
        }
        uint256 g = gasleft();
        nodes.nodesOf(modelId); // 17 nodes
        require(g - gasleft() < 500_000, "nodesOf walks the global list");
    }

    /// 5. The first registrant of a name owns it forever.
    function test_Finding5_NamesCannotBeSquatted() public {
        vm.prank(address(0x5017));
        models.registerModel("digits-cnn", 5, 0, 0, 0);
        (bool ok,) = address(models).call(abi.encodeCall(models.registerModel, ("digits-cnn", 5, 0, 0, 0)));
        require(ok, "the project cannot register its own model name after a squat");
    }

    /// 6. unbondingPeriod == maxJobDuration lets a node withdraw before its job can be finalized.
    function test_Finding6_UnbondingMustOutlastAJob() public {
        NodeRegistry reg = new NodeRegistry(models, MIN_STAKE, MAX_JOB, SLASH);
        (bool ok,) = address(this).call(abi.encodeCall(this.deployMarket, (reg)));
        require(!ok, "a market with unbondingPeriod == maxJobDuration was deployed");
    }

    function deployMarket(NodeRegistry reg) external {
        new JobMarket(models, reg, MAX_JOB);
    }

    /// 7. A payout address that refuses ETH locks the stake; the payout cannot be changed.
    function test_Finding7_PayoutCanBeChanged() public {
        address n = vm.addr(902);
        vm.deal(n, 10 ether);
        Refuser bad = new Refuser();
        vm.prank(n);
        nodes.register{value: MIN_STAKE}(modelId, 0, 30, "x", address(bad), 1, 1);
        vm.prank(n);
        (bool ok,) = address(nodes).call(abi.encodeWithSignature("setPayout(address)", n));
        require(ok, "no way to change the payout address");
    }

    /// 8. Misleading errors and junk bits.
    function test_Finding8_ExactErrors() public {
        uint256[] memory h = plan3x3();
        h[1] = hop(node[1], 10, 10, 0); // zero-length span
        vm.prank(requester);
        (, bytes memory err) = address(market).call{value: 1}(abi.encodeCall(market.submitJob, (modelId, h, params())));
        require(bytes4(err) != JobPlan.JobPlanOverlap.selector, "a zero-length span reports JobPlanOverlap");

        h = plan3x3();
        h[0] |= uint256(1) << 250; // junk in the unused top bits
        vm.prank(requester);
        (bool ok,) = address(market).call{value: 1}(abi.encodeCall(market.submitJob, (modelId, h, params())));
        require(!ok, "a hop with junk bits was accepted");

        bytes32 other = models.registerModel("other", 30, 0, 0, 0);
        h = plan3x3();
        h[1] = hop(node[1], 0, 30, 0); // node[1] serves [10,20) of "m", not "other"
        vm.prank(requester);
        (, err) = address(market).call{value: 1}(abi.encodeCall(market.submitJob, (other, h, params())));
        require(bytes4(err) == NodeRegistry.NodeWrongModel.selector, "wrong model reported as another error");

        uint256 id = submit(1 ether);
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, 1 ether);
        vm.prank(node[0]); // replays replica 0's reveal
        (, err) = address(market).call(abi.encodeCall(market.reveal, (id, 0, OUT, bytes32(uint256(7)))));
        require(bytes4(err) == JobMarket.JobNotTail.selector, "a non-tail reveal reports JobBadReveal");
    }

    /// 9. submitJob gas grows quadratically with hops.
    function test_Finding9_SubmitGasIsLinearInHops() public {
        bytes32 m = models.registerModel("wide", 64, 0, 0, 0);
        uint256[] memory big = new uint256[](512);
        for (uint256 i; i < 512; ++i) {
            address n = vm.addr(20_000 + i);
            vm.deal(n, 2 ether);
            vm.prank(n);
            nodes.register{value: MIN_STAKE}(m, uint16(i % 64), uint16(i % 64 + 1), "x", address(0), 1, 1);
            big[i] = hop(n, i % 64, i % 64 + 1, i / 64);
        }
        uint256[] memory small = new uint256[](64);
        for (uint256 i; i < 64; ++i) small[i] = big[i];
        vm.startPrank(requester);
        uint256 g = gasleft();
        market.submitJob{value: 1 ether}(m, small, params());
        uint256 g64 = g - gasleft();
        g = gasleft();
        market.submitJob{value: 1 ether}(m, big, params());
        uint256 g512 = g - gasleft();
        vm.stopPrank();
        require(g512 < 9 * g64, "512 hops cost more than 9x 64 hops");
    }
}
