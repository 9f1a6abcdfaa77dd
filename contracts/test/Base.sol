// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ModelRegistry} from "../src/ModelRegistry.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {Disputes} from "../src/Disputes.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {JobStore} from "../src/JobStore.sol";

/// @dev The forge cheatcodes these tests use (no forge-std here).
interface Vm {
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function warp(uint256) external;
    function roll(uint256) external;
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

/// @dev Deploys the four contracts, a 30-block model and 9 nodes serving [0,10), [10,20), [20,30).
contract Base {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    uint256 internal constant MIN_STAKE = 1 ether;
    uint256 internal constant UNBONDING = 2 days;
    uint256 internal constant SLASH = 0.1 ether;
    uint32 internal constant MAX_JOB = 1 days;
    uint32 internal constant MIN_WINDOW = 10;
    uint32 internal constant ATTEST = 1 hours;
    uint32 internal constant GRACE = 1 hours;
    uint16 internal constant VERIFY_BPS = 1000; // 10% reserve
    uint16 internal constant KEEPER_BPS = 100; // 1% per stage
    uint80 internal constant PRICE = 1 gwei; // per block per token
    uint8 internal constant ALL_CAPS = 0x1f;
    uint64 internal constant ALL3 = 7; // servedMask of a 3-hop replica without standbys
    bytes32 internal constant SALT = bytes32(uint256(7));

    /// @dev What a settlement may change: node earnings and stakes, the requester's credits, burned.
    struct Books {
        uint256[9] earnings;
        uint256[9] stake;
        uint256 credits;
        uint256 burned;
    }

    /// @dev JobStore.JobFinalized's fields, decoded.
    struct Finalized {
        uint8 outcome;
        uint8 paidMask;
        uint256 refund;
        uint256 burned;
        address[] who;
        uint8[] outcomes;
        uint256[] paid;
        uint256[] slashed;
    }

    ModelRegistry internal models;
    NodeRegistry internal nodes;
    Disputes internal disputes;
    JobMarket internal market;
    bytes32 internal modelId;
    address[9] internal node;
    address internal requester = address(0xBEEF);
    uint256[] internal lastPlan; // the plan whose JobFinalized finalizedEvent decodes (nodes in its order)

    function setUp() public virtual {
        models = new ModelRegistry();
        nodes = new NodeRegistry(models, MIN_STAKE, UNBONDING, SLASH);
        disputes = new Disputes(nodes, 3);
        market = new JobMarket(models, nodes, disputes, config());
        nodes.setJobMarket(address(market));
        disputes.setJobMarket(address(market));
        modelId = models.registerModel("m", 30, 4096, bytes32(uint256(1)), 0, 0);
        for (uint256 i; i < 9; ++i) {
            node[i] = vm.addr(100 + i);
            vm.deal(node[i], 10 ether);
            vm.prank(node[i]);
            nodes.register{value: MIN_STAKE}(
                modelId, uint16(10 * (i % 3)), uint16(10 * (i % 3) + 10), "h:1", address(0), 1, PRICE, ALL_CAPS
            );
        }
        vm.deal(requester, 1000 ether);
        vm.roll(100);
    }

    function config() internal pure returns (JobStore.Config memory) {
        return JobStore.Config(MAX_JOB, MIN_WINDOW, MIN_WINDOW, ATTEST, GRACE, VERIFY_BPS, KEEPER_BPS);
    }

    function hop(address n, uint256 s, uint256 e, uint256 r) internal pure returns (uint256) {
        return uint256(uint160(n)) | (s << 160) | (e << 176) | (r << 192);
    }

    function standby(address n, uint256 s, uint256 e, uint256 r) internal pure returns (uint256) {
        return hop(n, s, e, r) | (1 << 200);
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

    function prices(uint256 n) internal pure returns (uint256[] memory ps) {
        ps = new uint256[](n);
        for (uint256 i; i < n; ++i) ps[i] = PRICE;
    }

    /// @dev The terms of a plan3x3 job of the requester (weight: 9 hops x 10 blocks x PRICE).
    function terms(uint256 fee) internal view returns (JobStore.Terms memory) {
        return JobStore.Terms(requester, modelId, fee, 90 * uint256(PRICE), prices(9));
    }

    function digest(uint256 fee) internal view returns (bytes32) {
        return digestOf(terms(fee));
    }

    function digestOf(JobStore.Terms memory t) internal pure returns (bytes32) {
        return keccak256(abi.encode(t.requester, t.modelId, t.fee, t.weight, keccak256(abi.encodePacked(t.prices))));
    }

    function submit(uint256 fee) internal returns (uint256 id) {
        vm.prank(requester);
        id = market.submitJob{value: fee}(modelId, plan3x3(), params());
    }

    function commitment(uint256 id, uint256 r, bytes memory out, uint64 mask) internal pure returns (bytes32) {
        return keccak256(abi.encode(id, r, keccak256(out), bytes32(0), mask, SALT));
    }

    function doCommit(uint256 id, uint256 r, bytes memory out, uint256 fee) internal {
        vm.prank(node[3 * r + 2]);
        commitTo(id, r, commitment(id, r, out, ALL3), plan3x3(), digest(fee));
    }

    /// @dev The tail words of a plan: each replica's last primary, then its standby if any.
    function tailsOf(uint256[] memory h) internal pure returns (uint256[] memory t) {
        t = new uint256[](h.length);
        uint256 k;
        for (uint256 i; i < h.length; ++i) {
            if (i + 1 < h.length && uint8(h[i + 1] >> 192) == uint8(h[i] >> 192)) continue;
            if ((h[i] >> 200) & 1 == 1) t[k++] = h[i - 1];
            t[k++] = h[i];
        }
        assembly {
            mstore(t, k)
        }
    }

    /// @dev market.commit with the tail words and hops hash of plan `h` (the caller pranks).
    function commitTo(uint256 id, uint256 r, bytes32 c, uint256[] memory h, bytes32 termsDigest) internal {
        market.commit(id, r, c, tailsOf(h), keccak256(abi.encodePacked(h)), termsDigest);
    }

    function doReveal(uint256 id, uint256 r, bytes memory out) internal {
        vm.prank(node[3 * r + 2]);
        market.reveal(id, r, out, bytes32(0), ALL3, SALT);
    }

    function fin(uint256 id, uint256 fee) internal {
        market.finalize(id, plan3x3(), terms(fee));
    }

    /// @dev The JobFinalized event of job `id` among the logs recorded since vm.recordLogs().
    function finalizedEvent(uint256 id) internal returns (Finalized memory f) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            Vm.Log memory l = logs[i];
            if (l.emitter != address(market) || l.topics[0] != JobStore.JobFinalized.selector) continue;
            require(uint256(l.topics[1]) == id, "JobFinalized of another job");
            uint256[] memory words;
            (f.outcome, f.paidMask, f.refund, f.burned, words) =
                abi.decode(l.data, (uint8, uint8, uint256, uint256, uint256[]));
            f.who = new address[](words.length);
            f.outcomes = new uint8[](words.length);
            f.paid = new uint256[](words.length);
            f.slashed = new uint256[](words.length);
            for (uint256 k; k < words.length; ++k) {
                f.who[k] = lastPlan.length > k ? address(uint160(lastPlan[k])) : address(0);
                (f.paid[k], f.slashed[k], f.outcomes[k]) =
                    (uint96(words[k]), uint96(words[k] >> 96), uint8(words[k] >> 192));
            }
            return f;
        }
        revert("no JobFinalized event");
    }

    /// @dev Finalize plan3x3 job `id` and return its JobFinalized event.
    function finalizeRecorded(uint256 id, uint256 fee) internal returns (Finalized memory) {
        lastPlan = plan3x3();
        vm.recordLogs();
        fin(id, fee);
        return finalizedEvent(id);
    }

    function books() internal view returns (Books memory b) {
        for (uint256 i; i < 9; ++i) {
            b.earnings[i] = earnings(node[i]);
            b.stake[i] = nodes.getNode(node[i]).stake;
        }
        b.credits = market.creditsOf(requester);
        b.burned = market.burned();
    }

    /// @dev Why JobFinalized `f` of a plan3x3 fast-path job with `fee` disagrees with what the chain
    ///      did between `before` and now; empty if it agrees.
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
        if (a.credits - before.credits != f.refund) return "requester credits != refund";
        if (a.burned - before.burned != f.burned || f.burned != slashed) return "burned != slashed";
        if (paid + f.refund != fee) return "paid + refund != fee";
        return "";
    }

    function earnings(address n) internal view returns (uint256) {
        return nodes.getNode(n).earnings;
    }

    /// @dev Register a fresh full node (index k) able to verify model "m".
    function fullNode(uint256 k) internal returns (address n) {
        n = vm.addr(5000 + k);
        vm.deal(n, 10 ether);
        vm.prank(n);
        nodes.register{value: MIN_STAKE}(modelId, 0, 30, "v:1", address(0), 1, PRICE, ALL_CAPS);
    }
}
