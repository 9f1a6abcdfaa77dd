// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.sol";
import {ModelRegistry} from "../src/ModelRegistry.sol";

contract ModelRegistryTest is Base {
    bytes internal constant OUT = hex"00000001";

    function test_RegisterAndGet() public view {
        ModelRegistry.Model memory m = models.getModel(models.modelIdOf(address(this), "m"));
        require(m.numBlocks == 30 && m.contextLength == 4096 && m.publisher == address(this) && !m.deprecated, "record");
        require(keccak256(bytes(m.name)) == keccak256("m"), "name");
    }

    function testFuzz_IdIsNamespacedByPublisher(address publisher, string calldata name) public {
        vm.assume(bytes(name).length > 0 && bytes(name).length <= 64 && publisher != address(this) && publisher != address(0));
        for (uint256 i; i < bytes(name).length; ++i) vm.assume(bytes(name)[i] != "/");
        vm.prank(publisher);
        bytes32 id = models.registerModel(name, 5, 1, 0, 0, 0);
        require(id == keccak256(abi.encode(publisher, name)) && id == models.modelIdOf(publisher, name), "id");
        (uint16 blocks, uint32 ctx) = models.liveModel(id);
        require(blocks == 5 && ctx == 1, "blocks, context");
    }

    function test_ANameCannotBeSquatted() public {
        vm.prank(address(0x5017));
        bytes32 squat = models.registerModel("digits-cnn", 5, 1, 0, 0, 0);
        bytes32 ours = models.registerModel("digits-cnn", 5, 1, bytes32(uint256(9)), 0, 0);
        require(ours != squat && models.getModel(ours).publisher == address(this), "each publisher owns its name");
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelAlreadyRegistered.selector, ours));
        models.registerModel("digits-cnn", 3, 1, 0, 0, 0);
    }

    function test_RevertWhen_Invalid() public {
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelInvalid.selector, "", uint16(3), uint32(1)));
        models.registerModel("", 3, 1, 0, 0, 0);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelInvalid.selector, "a/b", uint16(3), uint32(1)));
        models.registerModel("a/b", 3, 1, 0, 0, 0);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelInvalid.selector, "x", uint16(3), uint32(0)));
        models.registerModel("x", 3, 0, 0, 0, 0);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelUnknown.selector, bytes32(uint256(5))));
        models.getModel(bytes32(uint256(5)));
    }

    function test_RevertWhen_DeprecatedByOther() public {
        vm.prank(address(0xABC));
        vm.expectRevert(
            abi.encodeWithSelector(ModelRegistry.ModelNotPublisher.selector, modelId, address(0xABC), address(this))
        );
        models.deprecate(modelId);
    }

    /// Deprecation stops new jobs and registrations; open jobs settle; nodes unbond as usual.
    function test_DeprecationRules() public {
        uint256 id = submit(1 ether);
        models.deprecate(modelId);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelIsDeprecated.selector, modelId));
        submit(1 ether);
        address late = vm.addr(900);
        vm.deal(late, 10 ether);
        vm.prank(late);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelIsDeprecated.selector, modelId));
        nodes.register{value: MIN_STAKE}(modelId, 0, 30, "x", address(0), 1, 1, ALL_CAPS);
        for (uint256 r; r < 3; ++r) doCommit(id, r, OUT, 1 ether);
        for (uint256 r; r < 3; ++r) doReveal(id, r, OUT);
        fin(id, 1 ether);
        require(earnings(node[0]) > 0, "the open job settled normally");
        vm.prank(node[0]);
        nodes.requestUnbond();
        vm.warp(block.timestamp + UNBONDING);
        nodes.withdrawStake(node[0]);
        require(nodes.getNode(node[0]).status == 3, "unbonded as usual");
    }
}
