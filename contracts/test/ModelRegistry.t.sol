// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.sol";
import {ModelRegistry} from "../src/ModelRegistry.sol";

contract ModelRegistryTest is Base {
    function test_RegisterAndGet() public view {
        ModelRegistry.Model memory m = models.getModel(keccak256("m"));
        require(m.numBlocks == 30 && m.publisher == address(this) && !m.deprecated, "record");
        require(keccak256(bytes(m.name)) == keccak256("m"), "name");
    }

    function testFuzz_IdIsKeccakOfName(string calldata name) public {
        vm.assume(bytes(name).length > 0 && keccak256(bytes(name)) != modelId);
        bytes32 id = models.registerModel(name, 5, 0, 0, 0);
        require(id == keccak256(bytes(name)), "id");
        require(models.liveBlocks(id) == 5, "blocks");
    }

    function test_RevertWhen_RegisteredTwice() public {
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelAlreadyRegistered.selector, modelId));
        models.registerModel("m", 3, 0, 0, 0);
    }

    function test_RevertWhen_DeprecatedByOther() public {
        vm.prank(address(0xABC));
        vm.expectRevert(
            abi.encodeWithSelector(ModelRegistry.ModelNotPublisher.selector, modelId, address(0xABC), address(this))
        );
        models.deprecate(modelId);
    }

    function test_DeprecateStopsNewJobs() public {
        models.deprecate(modelId);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ModelIsDeprecated.selector, modelId));
        submit(1 ether);
    }
}
