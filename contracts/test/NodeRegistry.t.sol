// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";

/// @dev A payout address that re-enters the registry when paid.
contract Reentrant {
    NodeRegistry internal reg;
    address internal node;
    uint256 public calls;

    constructor(NodeRegistry reg_, address node_) {
        reg = reg_;
        node = node_;
    }

    receive() external payable {
        ++calls;
        if (calls < 3) {
            try reg.withdrawEarnings(node) {} catch {}
            try reg.withdrawStake(node) {} catch {}
        }
    }
}

contract NodeRegistryTest is Base {
    address internal fresh = address(0xF00D);

    function setUp() public override {
        super.setUp();
        vm.deal(fresh, 100 ether);
    }

    function test_RevertWhen_StakeTooLow() public {
        vm.prank(fresh);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.NodeStakeTooLow.selector, 0.5 ether, MIN_STAKE));
        nodes.register{value: 0.5 ether}(modelId, 0, 10, "x", address(0), 1, 1);
    }

    function testFuzz_RevertWhen_BadSpan(uint16 start, uint16 end) public {
        vm.assume(start >= end || end > 30);
        vm.prank(fresh);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.NodeBadSpan.selector, start, end, uint16(30)));
        nodes.register{value: 1 ether}(modelId, start, end, "x", address(0), 1, 1);
    }

    function test_UnbondingTiming() public {
        vm.prank(node[0]);
        nodes.requestUnbond();
        NodeRegistry.Node memory n = nodes.getNode(node[0]);
        require(n.status == 2 && n.unbondAt == block.timestamp + UNBONDING, "unbonding");
        vm.warp(block.timestamp + UNBONDING - 1);
        vm.expectRevert(
            abi.encodeWithSelector(NodeRegistry.NodeStillBonded.selector, node[0], n.unbondAt, block.timestamp)
        );
        nodes.withdrawStake(node[0]);
        vm.warp(block.timestamp + 1);
        uint256 before = node[0].balance;
        nodes.withdrawStake(node[0]);
        require(node[0].balance == before + MIN_STAKE, "paid");
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.NodeNotUnbonding.selector, node[0]));
        nodes.withdrawStake(node[0]);
    }

    function test_RevertWhen_UnbondingNodeInPlan() public {
        vm.prank(node[4]);
        nodes.requestUnbond();
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.NodeNotActive.selector, node[4], uint8(2)));
        submit(1 ether);
    }

    function test_RevertWhen_SettleNotJobMarket() public {
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.NodeOnlyJobMarket.selector, address(this)));
        nodes.settle(1, new address[](0), new uint8[](0), new uint256[](0));
    }

    function test_ReentrantPayoutGetsPaidOnce() public {
        address n = address(0xA11CE);
        Reentrant r = new Reentrant(nodes, n);
        vm.deal(n, 10 ether);
        vm.prank(n);
        nodes.register{value: 2 ether}(modelId, 0, 30, "x", address(r), 1, 1);
        vm.prank(n);
        nodes.requestUnbond();
        vm.warp(block.timestamp + UNBONDING);
        uint256 regBefore = address(nodes).balance;
        nodes.withdrawStake(n);
        require(address(r).balance == 2 ether, "paid exactly the stake");
        require(address(nodes).balance == regBefore - 2 ether, "registry lost only the stake");
    }
}
