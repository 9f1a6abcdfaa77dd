// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {NodeBook} from "../src/NodeBook.sol";

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

/// @dev A payout address that refuses ETH.
contract Refuser {
    receive() external payable {
        revert("no");
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
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeStakeTooLow.selector, 0.5 ether, MIN_STAKE));
        nodes.register{value: 0.5 ether}(modelId, 0, 10, "x", address(0), 1, 1, ALL_CAPS);
    }

    function testFuzz_RevertWhen_BadSpan(uint16 start, uint16 end) public {
        vm.assume(start >= end || end > 30);
        vm.prank(fresh);
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeBadSpan.selector, start, end, uint16(30)));
        nodes.register{value: 1 ether}(modelId, start, end, "x", address(0), 1, 1, ALL_CAPS);
    }

    function test_RevertWhen_BadCapsOrTwice() public {
        vm.startPrank(fresh);
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeBadCaps.selector, uint8(8)));
        nodes.register{value: 1 ether}(modelId, 0, 10, "x", address(0), 1, 1, 8); // no dtype
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeBadCaps.selector, uint8(1)));
        nodes.register{value: 1 ether}(modelId, 0, 10, "x", address(0), 1, 1, 1); // no weights mode
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeBadCaps.selector, uint8(0x29)));
        nodes.register{value: 1 ether}(modelId, 0, 10, "x", address(0), 1, 1, 0x29); // bit 5
        nodes.register{value: 1 ether}(modelId, 0, 10, "x", address(0), 1, 1, ALL_CAPS);
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeAlreadyRegistered.selector, fresh));
        nodes.register{value: 1 ether}(modelId, 0, 10, "x", address(0), 1, 1, ALL_CAPS);
        vm.stopPrank();
    }

    function test_UnbondingTiming() public {
        vm.prank(node[0]);
        nodes.requestUnbond();
        NodeBook.Node memory n = nodes.getNode(node[0]);
        require(n.status == 2 && n.unbondAt == block.timestamp + UNBONDING, "unbonding");
        vm.prank(node[0]);
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeIsUnbonding.selector, node[0], n.unbondAt));
        nodes.addStake{value: 1}();
        vm.warp(block.timestamp + UNBONDING - 1);
        vm.expectRevert(
            abi.encodeWithSelector(NodeBook.NodeStillBonded.selector, node[0], n.unbondAt, block.timestamp)
        );
        nodes.withdrawStake(node[0]);
        vm.warp(block.timestamp + 1);
        uint256 before = node[0].balance;
        nodes.withdrawStake(node[0]);
        require(node[0].balance == before + MIN_STAKE, "paid");
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeNotUnbonding.selector, node[0]));
        nodes.withdrawStake(node[0]);
        vm.prank(node[0]);
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeUnknown.selector, node[0]));
        nodes.requestUnbond();
    }

    function test_RevertWhen_SettleNotJobMarket() public {
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeOnlyJobMarket.selector, address(this)));
        nodes.settle(new uint256[](0), new uint256[](0));
        vm.expectRevert(NodeBook.NodeBadSetup.selector);
        nodes.setJobMarket(address(1));
    }

    function test_ReentrantPayoutGetsPaidOnce() public {
        address n = address(0xA11CE);
        Reentrant r = new Reentrant(nodes, n);
        vm.deal(n, 10 ether);
        vm.prank(n);
        nodes.register{value: 2 ether}(modelId, 0, 30, "x", address(r), 1, 1, ALL_CAPS);
        vm.prank(n);
        nodes.requestUnbond();
        vm.warp(block.timestamp + UNBONDING);
        uint256 regBefore = address(nodes).balance;
        nodes.withdrawStake(n);
        require(address(r).balance == 2 ether, "paid exactly the stake");
        require(address(nodes).balance == regBefore - 2 ether, "registry lost only the stake");
    }

    function test_PayoutThatRefusesEthCanBeReplaced() public {
        address n = address(0xB0B);
        Refuser bad = new Refuser();
        vm.deal(n, 10 ether);
        vm.prank(n);
        nodes.register{value: 2 ether}(modelId, 0, 30, "x", address(bad), 1, 1, ALL_CAPS);
        vm.prank(n);
        nodes.requestUnbond();
        vm.warp(block.timestamp + UNBONDING);
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeTransferFailed.selector, address(bad), 2 ether));
        nodes.withdrawStake(n);
        vm.prank(fresh);
        vm.expectRevert(abi.encodeWithSelector(NodeBook.NodeUnknown.selector, fresh));
        nodes.setPayout(fresh);
        vm.prank(n);
        nodes.setPayout(address(0xCA5E));
        nodes.withdrawStake(n);
        require(address(0xCA5E).balance == 2 ether, "the stake left to the new payout");
    }

    function test_IndexPerModelAddsAndRemovesInConstantTime() public {
        require(nodes.nodeCount(modelId) == 9 && nodes.fullNodeCount(modelId) == 0, "9 nodes, no full node");
        address full = fullNode(0);
        require(nodes.nodeCount(modelId) == 10 && nodes.fullNodeCount(modelId) == 1, "full node indexed twice");
        (address[] memory page,) = nodes.nodesOf(modelId, 8, 5);
        require(page.length == 2 && page[1] == full, "page clipped at the end");
        (page,) = nodes.nodesOf(modelId, 50, 5);
        require(page.length == 0, "a page past the end is empty");
        vm.prank(node[0]);
        nodes.requestUnbond();
        vm.warp(block.timestamp + UNBONDING);
        nodes.withdrawStake(node[0]);
        (page,) = nodes.nodesOf(modelId, 0, 100);
        require(page.length == 9 && page[0] == full, "swap-and-pop: the last took the exited one's place");
        require(nodes.fullNodesOf(modelId, 0, 10)[0] == full, "full pool");
    }

    /// Finding 4: reading one model's nodes costs O(its nodes), not O(all registrations).
    function test_NodesOfGasIndependentOfOtherModels() public {
        for (uint256 i; i < 8; ++i) fullNode(i); // "m" now has 17 nodes
        for (uint256 i; i < 10_000; ++i) {
            address n = address(uint160(0x100000 + i));
            vm.deal(n, 2 ether);
            bytes32 m = i % 100 == 0 ? models.registerModel(string(abi.encodePacked("n", bytes32(i + 1 << 8))), 30, 1, 0, 0, 0) : _lastModel;
            if (i % 100 == 0) _lastModel = m;
            vm.prank(n);
            nodes.register{value: MIN_STAKE}(m, 0, 30, "x", address(0), 1, 1, ALL_CAPS);
        }
        (uint256 count, uint256 gasUsed) = _nodesOfGas();
        require(count == 17, "17 nodes of m");
        require(gasUsed < 400_000, "a page of 17 nodes stays cheap after 10,000 other registrations");
    }

    bytes32 private _lastModel;

    function _nodesOfGas() internal view returns (uint256 count, uint256 used) {
        uint256 g = gasleft();
        (address[] memory a,) = nodes.nodesOf(modelId, 0, 100);
        used = g - gasleft();
        count = a.length;
    }
}
