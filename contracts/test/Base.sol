// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ModelRegistry} from "../src/ModelRegistry.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {JobMarket} from "../src/JobMarket.sol";

/// @dev The forge cheatcodes these tests use (no forge-std here).
interface Vm {
    function warp(uint256) external;
    function deal(address, uint256) external;
    function prank(address) external;
    function startPrank(address) external;
    function stopPrank() external;
    function expectRevert(bytes calldata) external;
    function expectRevert(bytes4) external;
    function expectRevert() external;
    function assume(bool) external;
    function addr(uint256) external returns (address);
}

/// @dev Deploys the three contracts, a 30-block model and 9 nodes serving [0,10), [10,20), [20,30).
contract Base {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    uint256 internal constant MIN_STAKE = 1 ether;
    uint256 internal constant UNBONDING = 2 days;
    uint256 internal constant SLASH = 0.1 ether;
    uint256 internal constant MAX_JOB = 1 days;

    ModelRegistry internal models;
    NodeRegistry internal nodes;
    JobMarket internal market;
    bytes32 internal modelId;
    address[9] internal node;
    address internal requester = address(0xBEEF);

    function setUp() public virtual {
        models = new ModelRegistry();
        nodes = new NodeRegistry(models, MIN_STAKE, UNBONDING, SLASH);
        market = new JobMarket(models, nodes, MAX_JOB);
        nodes.setJobMarket(address(market));
        modelId = models.registerModel("m", 30, bytes32(uint256(1)), 0, 0);
        for (uint256 i; i < 9; ++i) {
            node[i] = vm.addr(100 + i);
            vm.deal(node[i], 10 ether);
            vm.prank(node[i]);
            nodes.register{value: MIN_STAKE}(modelId, uint16(10 * (i % 3)), uint16(10 * (i % 3) + 10), "h:1", address(0), 1, 1);
        }
        vm.deal(requester, 1000 ether);
    }

    function hop(address n, uint256 s, uint256 e, uint256 r) internal pure returns (uint256) {
        return uint256(uint160(n)) | (s << 160) | (e << 176) | (r << 192);
    }

    /// @dev replica r uses nodes 3r, 3r+1, 3r+2
    function plan3x3() internal view returns (uint256[] memory h) {
        h = new uint256[](9);
        for (uint256 i; i < 9; ++i) h[i] = hop(node[i], 10 * (i % 3), 10 * (i % 3) + 10, i / 3);
    }

    function params() internal pure returns (JobMarket.JobParams memory p) {
        p.input = "hi";
        p.maxTokens = 4;
        p.commitWindow = 100;
        p.revealWindow = 100;
    }

    function submit(uint256 fee) internal returns (uint256 id) {
        vm.prank(requester);
        id = market.submitJob{value: fee}(modelId, plan3x3(), params());
    }

    function commitment(uint256 id, uint256 r, bytes memory out, address tail) internal pure returns (bytes32) {
        return keccak256(abi.encode(id, r, keccak256(out), bytes32(uint256(7)), tail));
    }

    function doCommit(uint256 id, uint256 r, bytes memory out, uint256 fee) internal {
        address tail = node[3 * r + 2];
        vm.prank(tail);
        market.commit(id, r, commitment(id, r, out, tail), modelId, fee, plan3x3());
    }

    function doReveal(uint256 id, uint256 r, bytes memory out) internal {
        vm.prank(node[3 * r + 2]);
        market.reveal(id, r, out, bytes32(uint256(7)));
    }

    function earnings(address n) internal view returns (uint256) {
        return nodes.getNode(n).earnings;
    }
}
