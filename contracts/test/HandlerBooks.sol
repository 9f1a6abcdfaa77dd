// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base, Vm} from "./Base.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {JobStore} from "../src/JobStore.sol";
import {NodeBook} from "../src/NodeBook.sol";

/// @dev A requester or payout that refuses ETH (JobTransferFailed, NodeTransferFailed).
contract Refuser {
    function submit(JobMarket m, bytes32 model, uint256[] calldata hops, JobMarket.JobParams calldata p)
        external
        payable
        returns (uint256)
    {
        return m.submitJob{value: msg.value}(model, hops, p);
    }

    function withdraw(JobMarket m) external {
        m.withdraw();
    }

    receive() external payable {
        revert("no");
    }
}

/// @dev The handler's state and books: the jobs it opened, what it expects each contract to hold, the
///      custom errors it reached, and the checks that compare a settlement's events with what moved.
abstract contract HandlerBooks is Base {
    struct J {
        uint256 id;
        uint256[] hops;
        JobStore.Terms t;
        uint8 numReplicas;
        bool done;
        uint256 keeperPaid; // keeper rewards credited so far on this job
    }

    struct Snapshot {
        uint256[] earnings;
        uint256[] stake;
        uint256[3] credits;
        uint256 keeperCredits;
        uint256 burned;
    }

    uint16 internal constant N = 4; // blocks of the model jobs run on
    uint256 internal constant POOL = 20; // full nodes of that model that plans use (and verifiers)
    uint256 internal constant VOLATILE = 4; // more full nodes, which unbond and come back (nodeLife)
    bytes internal constant OUT = hex"0000000a";
    bytes internal constant BAD = hex"0000000b";
    bytes32 internal small;
    bytes32 internal wide; // 70 blocks: room for a replica of more than 64 hops
    address[] internal pool;
    address internal partialNode; // serves [1, N) only
    address internal fp32Only; // caps: fp32 + exact
    address[] public everyone; // every node address (sums over the registry)
    address[3] internal requesters;
    address[2] internal keepers;
    Refuser internal refuser;
    Refuser internal refuserPayout;
    address internal refuserNode;
    J[] internal jobs;
    bool internal ready;
    uint256 internal deprecated; // models published and deprecated by misuse()

    mapping(bytes4 => bool) public seen;
    bytes4[] public seenList;
    uint256 public openEscrow; // fees of unfinalized jobs less the keeper rewards paid on them
    mapping(address => uint256) public granted; // credits granted per account, cumulative
    mapping(address => uint256) public feesPaid; // per requester
    mapping(address => uint256) public earned; // earnings credited per node, cumulative
    mapping(address => uint256) public earningsWithdrawn;
    string public wrong; // the first bookkeeping mismatch found (empty: none)

    function _node(uint256 key, bytes32 model, uint16 s, uint16 e, uint80 price, uint8 caps, address payout)
        internal
        returns (address n)
    {
        n = vm.addr(key);
        vm.deal(n, 1e24);
        vm.prank(n);
        nodes.register{value: MIN_STAKE}(model, s, e, "h", payout, 1, price, caps);
        everyone.push(n);
    }

    function _rec(bytes memory err) internal {
        if (err.length < 4) return;
        bytes4 s = bytes4(err);
        if (!seen[s]) {
            seen[s] = true;
            seenList.push(s);
        }
    }

    function seenCount() external view returns (uint256) {
        return seenList.length;
    }

    function _rnd(uint256 seed, uint256 k) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(seed, k)));
    }

    function _track(uint256 id, uint256[] memory h, address who, uint256 fee) internal {
        uint256[] memory prices = new uint256[](h.length);
        for (uint256 i; i < h.length; ++i) prices[i] = nodes.getNode(address(uint160(h[i]))).price;
        J storage j = jobs.push();
        (j.id, j.hops, j.t, j.numReplicas) =
            (id, h, JobStore.Terms(who, small, fee, _weight(h, prices), prices), market.getJob(id).numReplicas);
        openEscrow += fee;
        feesPaid[who] += fee;
    }

    /// @dev Mostly one of the last three jobs (still in their windows), else one not yet settled.
    function _job(uint256 js) internal view returns (J storage) {
        uint256 n = jobs.length;
        if (js % 2 == 0) return jobs[n - 1 - (js >> 2) % (n < 3 ? n : 3)];
        for (uint256 k; k < 8; ++k) {
            J storage j = jobs[_rnd(js, k) % n];
            if (!j.done) return j;
        }
        return jobs[n - 1];
    }

    /// @dev The tail words, the replica's words and the committer a job's replica would use.
    function _replica(J storage j, uint256 r)
        internal
        view
        returns (uint256 first, uint256 count, address tail, address sb)
    {
        first = type(uint256).max;
        for (uint256 i; i < j.hops.length; ++i) {
            if (uint8(j.hops[i] >> 192) != r) continue;
            if (first == type(uint256).max) first = i;
            ++count;
        }
        uint256 lastW = j.hops[first + count - 1];
        if ((lastW >> 200) & 1 == 1) (tail, sb) = (address(uint160(j.hops[first + count - 2])), address(uint160(lastW)));
        else tail = address(uint160(lastW));
    }

    /// @dev The route when every primary served, or (byStandby) the tail's standby served the tail's span.
    function _route(J storage j, uint256 first, uint256 count, bool byStandby) internal view returns (uint64 m) {
        for (uint256 w; w < count; ++w) if ((j.hops[first + w] >> 200) & 1 == 0) m |= uint64(1 << w);
        if (byStandby) m = (m & ~uint64(1 << (count - 2))) | uint64(1 << (count - 1));
    }

    /// @dev finalize or drawVerifiers by `keeper`; on success the books are updated and checked.
    function _step(J storage j, address keeper, bool draw) internal returns (bool ok) {
        Snapshot memory before = _snapshot();
        vm.recordLogs();
        vm.prank(keeper);
        if (!draw) {
            try market.finalize(j.id, j.hops, j.t) {
                ok = true;
            } catch (bytes memory err) {
                _rec(err);
            }
        } else {
            try market.drawVerifiers(j.id, j.hops, j.t) {
                ok = true;
            } catch (bytes memory err) {
                _rec(err);
            }
        }
        if (ok) _settled(j, keeper, before);
    }

    function _snapshot() internal view returns (Snapshot memory s) {
        s.earnings = new uint256[](everyone.length);
        s.stake = new uint256[](everyone.length);
        for (uint256 i; i < everyone.length; ++i) {
            NodeBook.Node memory n = nodes.getNode(everyone[i]);
            (s.earnings[i], s.stake[i]) = (n.earnings, n.stake);
        }
        for (uint256 i; i < 3; ++i) s.credits[i] = market.creditsOf(requesters[i]);
        s.keeperCredits = market.creditsOf(keepers[0]) + market.creditsOf(keepers[1]);
        s.burned = market.burned();
    }

    /// @dev After a successful finalize/draw: update the books and compare them with the events.
    function _settled(J storage j, address keeper, Snapshot memory b) internal {
        Snapshot memory a = _snapshot();
        uint256 reward = a.keeperCredits - b.keeperCredits;
        granted[keeper] += reward;
        uint256 earnedNow;
        uint256 cut;
        for (uint256 i; i < everyone.length; ++i) {
            earned[everyone[i]] += a.earnings[i] - b.earnings[i];
            earnedNow += a.earnings[i] - b.earnings[i];
            if (b.stake[i] < a.stake[i]) return _wrong("stake grew in a settlement");
            cut += b.stake[i] - a.stake[i];
        }
        uint256 refunds;
        for (uint256 i; i < 3; ++i) {
            granted[requesters[i]] += a.credits[i] - b.credits[i];
            refunds += a.credits[i] - b.credits[i];
        }
        if (a.burned < b.burned) return _wrong("burned shrank");
        bool done = market.getJob(j.id).status == 2;
        if (!done) {
            j.keeperPaid += reward;
            openEscrow -= reward;
            if (earnedNow != 0 || cut != 0 || refunds != 0) _wrong("money moved without a settlement");
            return;
        }
        j.done = true;
        openEscrow -= j.t.fee - j.keeperPaid;
        _checkEvents(j, earnedNow, cut, refunds, a.burned - b.burned);
    }

    function _checkEvents(J storage j, uint256 earnedNow, uint256 cut, uint256 refunds, uint256 burnt) internal {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        uint256 paid;
        uint256 slashed;
        bool found;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter != address(market)) continue;
            if (logs[i].topics[0] == JobStore.JobFinalized.selector) {
                (,, uint256 refund, uint256 burnedWei, uint256[] memory words) =
                    abi.decode(logs[i].data, (uint8, uint8, uint256, uint256, uint256[]));
                found = true;
                if (words.length != j.hops.length) return _wrong("JobFinalized: not one word per hop");
                for (uint256 k; k < words.length; ++k) (paid, slashed) = (paid + uint96(words[k]), slashed + uint96(words[k] >> 96));
                if (refund != refunds) return _wrong("JobFinalized.refund != requester credits");
                if (burnedWei != burnt) return _wrong("JobFinalized.burnedWei != burned");
            } else if (logs[i].topics[0] == JobStore.DisputeSettled.selector) {
                (,,, uint256[] memory vpaid) = abi.decode(logs[i].data, (uint8[], address[], uint8[], uint256[]));
                for (uint256 k; k < vpaid.length; ++k) paid += vpaid[k];
            }
        }
        if (!found) return _wrong("finalized without JobFinalized");
        if (paid != earnedNow) return _wrong("events' pay != earnings credited");
        if (slashed != cut) return _wrong("events' slashes != stake taken");
    }

    function _wrong(string memory why) internal {
        if (bytes(wrong).length == 0) wrong = why;
    }

    function _decimal(uint256 i) internal pure returns (string memory) {
        bytes memory b = new bytes(8);
        for (uint256 k; k < 8; ++k) b[7 - k] = bytes1(uint8(48 + (i / 10 ** k) % 10));
        return string(b);
    }

    function _weight(uint256[] memory h, uint256[] memory prices) internal pure returns (uint256 w) {
        for (uint256 i; i < h.length; ++i) {
            uint256 blocks = ((h[i] >> 176) & 0xffff) - ((h[i] >> 160) & 0xffff);
            if ((h[i] >> 200) & 1 == 0) w += prices[i] * blocks;
            else if (prices[i] > prices[i - 1]) w += (prices[i] - prices[i - 1]) * blocks;
        }
    }

    function _settledOutside(Snapshot memory b) internal {
        Snapshot memory a = _snapshot();
        for (uint256 i; i < everyone.length; ++i) earned[everyone[i]] += a.earnings[i] - b.earnings[i];
    }

    function accounts() external view returns (address[] memory a) {
        a = new address[](7);
        (a[0], a[1], a[2], a[3], a[4], a[5], a[6]) =
            (requesters[0], requesters[1], requesters[2], keepers[0], keepers[1], address(refuser), address(this));
    }

    function contracts() external view returns (address, address) {
        return (address(market), address(nodes));
    }

    function jobCounts() external view returns (uint256 all, uint256 settled) {
        all = jobs.length;
        for (uint256 i; i < all; ++i) if (jobs[i].done) ++settled;
    }

    function everyoneCount() external view returns (uint256) {
        return everyone.length;
    }

    function nodeBooks(uint256 i) external view returns (address n, uint256 stake, uint256 earn) {
        n = everyone[i];
        NodeBook.Node memory r = nodes.getNode(n);
        (stake, earn) = (r.stake, r.earnings);
    }
}
