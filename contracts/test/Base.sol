// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ModelRegistry} from "../src/ModelRegistry.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {JobMarket} from "../src/JobMarket.sol";

/// @dev The forge cheatcodes these tests use (no forge-std here).
interface Vm {
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

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
    function recordLogs() external;
    function getRecordedLogs() external returns (Log[] memory);
}

/// @dev Deploys the three contracts, a 30-block model and 9 nodes serving [0,10), [10,20), [20,30).
contract Base {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    uint256 internal constant MIN_STAKE = 1 ether;
    uint256 internal constant UNBONDING = 2 days;
    uint256 internal constant SLASH = 0.1 ether;
    uint256 internal constant MAX_JOB = 1 days;

    /// @dev What finalize may change: node earnings and stakes, the requester's credits.
    struct Books {
        uint256[9] earnings;
        uint256[9] stake;
        uint256 credits;
    }

    /// @dev JobMarket.JobFinalized's fields, decoded.
    struct Finalized {
        uint8 outcome;
        bytes32 outputHash;
        uint8 winnersMask;
        uint256 refund;
        address[] who;
        uint8[] outcomes;
        uint256[] paid;
        uint256[] slashed;
    }

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

    /// @dev The JobFinalized event of job `id` among the logs recorded since vm.recordLogs().
    function finalizedEvent(uint256 id) internal returns (Finalized memory f) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            Vm.Log memory l = logs[i];
            if (l.emitter != address(market) || l.topics[0] != JobMarket.JobFinalized.selector) continue;
            require(uint256(l.topics[1]) == id, "JobFinalized of another job");
            (f.outcome, f.outputHash, f.winnersMask, f.refund) = abi.decode(l.data, (uint8, bytes32, uint8, uint256));
            (,,,, f.who, f.outcomes, f.paid, f.slashed) =
                abi.decode(l.data, (uint8, bytes32, uint8, uint256, address[], uint8[], uint256[], uint256[]));
            return f;
        }
        revert("no JobFinalized event");
    }

    /// @dev Finalize job `id` and return its JobFinalized event.
    function finalizeRecorded(uint256 id, uint256 fee) internal returns (Finalized memory) {
        vm.recordLogs();
        market.finalize(id, modelId, fee, plan3x3());
        return finalizedEvent(id);
    }

    function books() internal view returns (Books memory b) {
        for (uint256 i; i < 9; ++i) {
            b.earnings[i] = earnings(node[i]);
            b.stake[i] = nodes.getNode(node[i]).stake;
        }
        b.credits = market.creditsOf(requester);
    }

    /// @dev Why JobFinalized `f` of a plan3x3 job with `fee` disagrees with what the chain did
    ///      between `before` and now; empty if it agrees.
    function eventMismatch(Finalized memory f, Books memory before, uint256 fee) internal view returns (string memory) {
        Books memory a = books();
        if (f.who.length != 9 || f.outcomes.length != 9 || f.paid.length != 9 || f.slashed.length != 9) {
            return "not one entry per hop";
        }
        uint256 paid;
        uint256 slashed;
        for (uint256 i; i < 9; ++i) {
            if (f.who[i] != node[i]) return "nodes not in plan order";
            if (f.paid[i] != a.earnings[i] - before.earnings[i]) return "paid != earnings credited";
            if (f.slashed[i] != before.stake[i] - a.stake[i]) return "slashed != stake taken";
            if (f.paid[i] != 0 && f.outcomes[i] != 1) return "paid without outcome 1";
            if (f.slashed[i] != 0 && f.outcomes[i] != 3) return "slashed without outcome 3";
            paid += f.paid[i];
            slashed += f.slashed[i];
        }
        if (a.credits - before.credits != f.refund + slashed) return "requester credits != refund + slashed";
        if (paid + f.refund != fee) return "paid + refund != fee";
        return "";
    }

    function earnings(address n) internal view returns (uint256) {
        return nodes.getNode(n).earnings;
    }
}
