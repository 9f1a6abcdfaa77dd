// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {JobMarket} from "../src/JobMarket.sol";
import {JobStore} from "../src/JobStore.sol";
import {Disputes} from "../src/Disputes.sol";
import {HandlerBooks, Refuser} from "./HandlerBooks.sol";

/// @dev Random jobs over random plans (1-8 replicas, random cuts, standbys, replicated or optimistic),
///      commits and reveals by tails, standbys and strangers, disputes, attestations, keepers, clock
///      moves, stake and withdrawals; with the bookkeeping the invariants compare against and the set
///      of custom errors reached (`seen`). Misuse is tried on purpose next to each good call.
contract Handler is HandlerBooks {
    /// @dev Deploy once; the fuzzer calling it again is a no-op.
    function setUp() public override {
        if (ready) return;
        ready = true;
        super.setUp();
        small = models.registerModel("s", N, 64, 0, 0, 0);
        wide = models.registerModel("w", 70, 64, 0, 0, 0);
        for (uint256 i; i < POOL + VOLATILE; ++i) {
            pool.push(_node(7000 + i, small, 0, N, uint80(i % 4) * 1 gwei, ALL_CAPS, address(0)));
        }
        partialNode = _node(7100, small, 1, N, 1, ALL_CAPS, address(0));
        fp32Only = _node(7101, small, 0, N, 1, 1 | 8, address(0));
        refuserPayout = new Refuser();
        refuserNode = _node(7102, wide, 0, 70, 1, ALL_CAPS, address(refuserPayout));
        for (uint256 i; i < 9; ++i) everyone.push(node[i]);
        requesters = [address(0xA1), address(0xA2), address(0xA3)];
        keepers = [address(0xB1), address(0xB2)];
        for (uint256 i; i < 3; ++i) vm.deal(requesters[i], 1e30);
        refuser = new Refuser();
        vm.deal(address(this), 1e30);
    }

    /// @dev A random plan over the pool: R replicas, random cuts, a standby on some primaries.
    function _plan(uint256 seed, uint256 r) internal view returns (uint256[] memory h, uint256[] memory prices) {
        uint256[] memory order = new uint256[](POOL);
        for (uint256 i; i < POOL; ++i) order[i] = i;
        for (uint256 i = POOL - 1; i > 0; --i) {
            uint256 j = _rnd(seed, 100 + i) % (i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        h = new uint256[](POOL);
        uint256 k;
        for (uint256 rep; rep < r; ++rep) {
            uint256 cuts = _rnd(seed, 200 + rep) % 8; // bit b: cut before block b + 1
            uint256 start;
            for (uint256 b = 1; b <= N; ++b) {
                if (b < N && (cuts >> (b - 1)) & 1 == 0) continue;
                if (k >= POOL) return _trim(h, k);
                h[k] = hop(pool[order[k]], start, b, rep);
                ++k;
                if (_rnd(seed, 300 + k) % 4 == 0 && k < POOL) {
                    h[k] = standby(pool[order[k]], start, b, rep);
                    ++k;
                }
                start = b;
            }
        }
        return _trim(h, k);
    }

    function _trim(uint256[] memory h, uint256 k) internal view returns (uint256[] memory t, uint256[] memory prices) {
        // drop a replica cut short by the pool's end
        while (k > 0 && (h[k - 1] >> 176) & 0xffff != N) --k;
        t = new uint256[](k);
        prices = new uint256[](k);
        for (uint256 i; i < k; ++i) {
            t[i] = h[i];
            prices[i] = nodes.getNode(address(uint160(h[i]))).price;
        }
    }

    function submitJob(uint256 seed) external {
        for (uint256 i; i < POOL; ++i) {
            if (nodes.getNode(pool[i]).status != 4) continue;
            vm.prank(pool[i]); // a slashed operator stakes again (the under-staked path)
            nodes.addStake{value: SLASH}();
        }
        bool optimistic = seed % 5 == 0;
        (uint256[] memory h,) = _plan(seed, optimistic ? 1 : 1 + (seed >> 8) % 8);
        if (h.length == 0) return;
        JobMarket.JobParams memory p = params();
        p.maxTokens = uint32(1 + (seed >> 16) % 8);
        p.commitWindow = uint32(MIN_WINDOW + (seed >> 24) % 50);
        p.revealWindow = uint32(MIN_WINDOW + (seed >> 32) % 500);
        if (optimistic) p.spec = (1 << 16) | (((seed >> 40) % 10_001) << 24);
        address who = requesters[(seed >> 56) % 3];
        _faults(seed, h, p, who);
        uint256 floor;
        try market.feeFloor(small, h, p.maxTokens, 0, 0) returns (uint256 f) {
            floor = f;
        } catch (bytes memory err) {
            return _rec(err); // a node of the plan left the active set
        }
        vm.prank(who);
        try market.submitJob{value: floor - (floor == 0 ? 0 : 1)}(small, h, p) {} catch (bytes memory err) {
            _rec(err); // JobFeeTooLow (or, for a free plan, a zero fee)
        }
        uint256 fee = floor + (seed >> 64) % 1 ether + 1;
        vm.prank(who);
        try market.submitJob{value: fee}(small, h, p) returns (uint256 id) {
            _track(id, h, who, fee);
        } catch (bytes memory err) {
            _rec(err);
        }

    }

    /// @dev Next to a good submission, one bad one: every plan, parameter and node error.
    function _faults(uint256 seed, uint256[] memory good, JobMarket.JobParams memory gp, address who) internal {
        uint256 f = (seed >> 72) % 24;
        uint256[] memory h = new uint256[](good.length);
        for (uint256 i; i < h.length; ++i) h[i] = good[i];
        JobMarket.JobParams memory p = params(); // a copy: the good submission keeps gp
        (p.maxTokens, p.commitWindow, p.revealWindow, p.spec) = (gp.maxTokens, gp.commitWindow, gp.revealWindow, gp.spec);
        bytes32 model = small;
        uint256 last = h.length - 1;
        if (f == 0) h[0] |= uint256(1) << 230; // JobPlanHopJunk
        else if (f == 1) h[0] = (h[0] & ~(uint256(0xffff) << 176)) | (uint256((h[0] >> 160) & 0xffff) << 176); // empty
        else if (f == 2) h[last] = (h[last] & ~(uint256(0xffff) << 176)) | (uint256(N + 1) << 176); // past end
        else if (f == 3) h[0] = (h[0] & ~(uint256(0xffff) << 160)) | (uint256(1) << 160); // gap
        else if (f == 4 && h.length > 1) h[1] = (h[1] & ~uint256(type(uint160).max)) | uint160(h[0]); // reuse
        else if (f == 5) h[0] |= uint256(1) << 200; // a standby first: bad standby
        else if (f == 6) h = new uint256[](0); // bad replicas
        else if (f == 7) h[0] = (h[0] & ~(uint256(0xff) << 192)) | (uint256(3) << 192); // replica out of order
        else if (f == 8) p.codec = 9;
        else if (f == 9) p.maxTokens = 65; // past the context length
        else if (f == 10) p.revealWindow = 1; // JobBadWindows
        else if (f == 11) p.input = ""; // JobBadRequest
        else if (f == 12) h[0] = (h[0] & ~uint256(type(uint160).max)) | uint160(partialNode); // span not served
        else if (f == 13) h[0] = (h[0] & ~uint256(type(uint160).max)) | uint160(node[0]); // wrong model
        else if (f == 14) (h[0], p.spec) = ((h[0] & ~uint256(type(uint160).max)) | uint160(fp32Only), 1); // spec
        else if (f == 15) h[0] = (h[0] & ~uint256(type(uint160).max)) | uint160(address(0xDEAD)); // not active
        else if (f == 16) (model, h) = (wide, _tooMany()); // JobPlanTooManyHops
        else if (f == 17) model = bytes32(uint256(5)); // ModelUnknown
        else if (f == 18) h[last] = (h[last] & ~(uint256(0xffff) << 176)) | (uint256(N - 1) << 176); // incomplete
        else if (f == 19 && h.length > 1 && (h[1] >> 200) & 1 == 0) h[1] = (h[1] & ~(uint256(0xffff) << 160)); // overlap
        else return;
        vm.prank(who);
        try market.submitJob{value: 1 ether}(model, h, p) returns (uint256 id) {
            _track(id, h, who, 1 ether); // the change left a valid job
        } catch (bytes memory err) {
            _rec(err);
        }
    }

    function _tooMany() internal pure returns (uint256[] memory h) {
        h = new uint256[](65);
        for (uint256 i; i < 65; ++i) h[i] = hop(address(uint160(0x1000 + i)), i, i == 64 ? 70 : i + 1, 0);
    }

    /// @dev Tails (or standbys) of most replicas of a job commit; misuse is tried alongside.
    function commitSome(uint256 js, uint256 seed) external {
        if (jobs.length == 0) return;
        J storage j = _job(js);
        bytes32 digest = digestOf(j.t);
        _commitAs(j, pool[0], j.numReplicas, 0, digest); // past the last replica
        for (uint256 r; r < j.numReplicas; ++r) {
            uint256 rs = _rnd(seed, r);
            if (rs % 4 == 0) continue; // this replica's tail stays silent (for now)
            (bytes32 c, address committer, address tail) = _commitment(j, r, rs);
            if (rs % 5 == 1) _commitAs(j, requesters[0], r, c, digest); // a stranger
            if (rs % 5 == 2) _commitAs(j, tail, r, c, bytes32(0)); // the wrong terms
            _commitAs(j, committer, r, c, digest);
            if (rs % 3 == 0) _commitAs(j, committer, r, c, digest); // again
        }
        (, address first) = _committer(j, 0, seed);
        vm.prank(first); // before every replica committed: too early (unless it is the only one)
        try market.reveal(j.id, 0, OUT, 0, 0, SALT) {} catch (bytes memory err) {
            _rec(err);
        }
    }

    function _committer(J storage j, uint256 r, uint256 seed) internal view returns (bytes32 c, address who) {
        (c, who,) = _commitment(j, r, _rnd(seed, r));
    }

    /// @dev A commitment for replica r: by its tail or the tail's standby, usually a valid route.
    function _commitment(J storage j, uint256 r, uint256 seed)
        internal
        view
        returns (bytes32 c, address committer, address tail)
    {
        (uint256 first, uint256 count, address t, address sb) = _replica(j, r);
        bool byStandby = sb != address(0) && (seed >> 8) % 2 == 1;
        uint64 route = (seed >> 16) % 7 == 0 ? uint64(seed >> 24) : _route(j, first, count, byStandby);
        c = commitment(j.id, r, (seed >> 40) % 4 == 0 ? BAD : OUT, route);
        (committer, tail) = (byStandby ? sb : t, t);
    }

    function _commitAs(J storage j, address who, uint256 r, bytes32 c, bytes32 digest) internal {
        uint256[] memory tails = tailsOf(j.hops);
        bytes32 hopsHash = keccak256(abi.encodePacked(j.hops));
        vm.prank(who);
        try market.commit(j.id, r, c, tails, hopsHash, digest) {} catch (bytes memory err) {
            _rec(err);
        }
    }

    /// @dev Every committed replica of a job reveals (trying its possible openings), with replays
    ///      by other nodes and a wrong salt alongside.
    function revealSome(uint256 js, uint256 seed) external {
        if (jobs.length == 0) return;
        J storage j = _job(js);
        try market.reveal(j.id, j.numReplicas, OUT, 0, 0, SALT) {} catch (bytes memory err) {
            _rec(err); // past the last replica
        }
        for (uint256 r; r < j.numReplicas; ++r) _revealReplica(j, r, seed);
    }

    function _revealReplica(J storage j, uint256 r, uint256 seed) internal {
        (uint256 first, uint256 count, address tail, address sb) = _replica(j, r);
        vm.prank(tail); // a wrong salt
        try market.reveal(j.id, r, OUT, 0, _route(j, first, count, false), bytes32(0)) {} catch (bytes memory err) {
            _rec(err);
        }
        for (uint256 v; v < 4; ++v) {
            // the committer's opening is one of these (route x output); others fail JobBadReveal
            bool byStandby = v & 1 == 1 && sb != address(0);
            bytes memory out = v & 2 == 0 ? OUT : BAD;
            uint64 route = _route(j, first, count, byStandby);
            vm.prank(pool[1 + (seed + v) % 3]); // a replay by someone else: JobNotTail when the opening is right
            try market.reveal(j.id, r, out, 0, route, SALT) {} catch (bytes memory err) {
                _rec(err);
            }
            vm.prank(byStandby ? sb : tail);
            try market.reveal(j.id, r, out, 0, route, SALT) {} catch (bytes memory err) {
                _rec(err);
            }
        }
    }

    /// @dev A settlement step (finalize or drawVerifiers) by a keeper, books checked against events.
    function settleSome(uint256 js, uint256 seed) external {
        if (jobs.length == 0) return;
        J storage j = _job(js);
        if (seed % 9 == 0) {
            try market.finalize(j.id + 1000, j.hops, j.t) {} catch (bytes memory err) {
                _rec(err); // JobUnknown
            }
        }
        if (seed % 7 == 0) {
            JobStore.Terms memory t = j.t;
            t.fee += 1;
            try market.finalize(j.id, j.hops, t) {} catch (bytes memory err) {
                _rec(err); // JobPlanMismatch (or a status error first)
            }
        }
        uint8 status = market.getJob(j.id).status; // try what fits the status, mostly
        bool ok = _step(j, keepers[seed % 2], (status == 3) != ((seed >> 8) % 5 == 0));
        if (ok && market.getJob(j.id).status == 4) _attestRound(j, seed); // just drawn: the verifiers attest
    }

    /// @dev Right after a draw: a stranger, a wrong-length and an out-of-range attestation, then the
    ///      verifiers (most of them) attest, one of them twice.
    function _attestRound(J storage j, uint256 seed) internal {
        address[] memory v = disputes.verifiersOf(j.id);
        uint8[] memory d = new uint8[](j.numReplicas);
        _attest(j.id, requesters[1], d);
        _attest(j.id, v[0], new uint8[](j.numReplicas + 1));
        d[0] = 200;
        _attest(j.id, v[0], d);
        for (uint256 i; i < v.length; ++i) {
            if (_rnd(seed, 500 + i) % 4 == 0) continue; // absent
            for (uint256 r; r < d.length; ++r) d[r] = uint8(_rnd(seed, 600 + 10 * i + r) % 3);
            _attest(j.id, v[i], d);
        }
        _attest(j.id, v[0], d);
        _step(j, keepers[seed % 2], false); // DisputeStillOpen while someone is absent; else it settles
    }

    function _attest(uint256 id, address who, uint8[] memory d) internal {
        vm.prank(who);
        try disputes.attest(id, d) {} catch (bytes memory err) {
            _rec(err);
        }
    }

    function attestSome(uint256 js, uint256 seed) external {
        if (jobs.length == 0) return;
        J storage j = _job(js);
        address[] memory v = disputes.verifiersOf(j.id);
        uint8[] memory d = new uint8[](seed % 5 == 0 ? j.numReplicas + 1 : j.numReplicas);
        for (uint256 r; r < d.length; ++r) d[r] = uint8(_rnd(seed, r) % 4);
        address who = v.length == 0 || seed % 6 == 0 ? pool[seed % POOL] : v[(seed >> 8) % v.length];
        vm.prank(who);
        try disputes.attest(j.id, d) {} catch (bytes memory err) {
            _rec(err);
        }
        if (v.length != 0) {
            for (uint256 r; r < d.length; ++r) d[r] = r == 0 ? 1 : 0; // a plausible verdict: often accepted
            vm.prank(v[(seed >> 16) % v.length]);
            try disputes.attest(j.id, d) {} catch (bytes memory err) {
                _rec(err);
            }
        }
    }

    function warp(uint256 dt) external {
        vm.warp(block.timestamp + (dt % 8 == 0 ? ATTEST + GRACE : dt % 30)); // sometimes past every grace
        vm.roll(block.number + 1 + dt % 3 + (dt % 50 == 0 ? 300 : 0)); // sometimes past a seed's blockhash
    }

    function nodeLife(uint256 i, uint256 seed) external {
        address n = pool[POOL + i % VOLATILE];
        uint256 f = seed % 6;
        vm.prank(n);
        if (f == 0) {
            try nodes.requestUnbond() {
                try nodes.withdrawStake(n) {} catch (bytes memory err) {
                    _rec(err); // NodeStillBonded
                }
            } catch (bytes memory err) {
                _rec(err);
            }
        } else if (f == 1) {
            try nodes.withdrawStake(n) {
                if (nodes.getNode(n).stake != 0) _wrong("stake left after withdrawal");
                vm.prank(n); // come back
                try nodes.register{value: MIN_STAKE}(small, 0, N, "h", address(0), 1, 1, ALL_CAPS) {} catch (bytes memory err) {
                    _rec(err);
                }
            } catch (bytes memory err) {
                _rec(err);
            }
        } else if (f == 2) {
            try nodes.addStake{value: SLASH}() {} catch (bytes memory err) {
                _rec(err);
            }
        } else if (f == 3) {
            uint256 e = nodes.getNode(n).earnings;
            try nodes.withdrawEarnings(n) {
                earningsWithdrawn[n] += e;
            } catch (bytes memory err) {
                _rec(err);
            }
        } else if (f == 4) {
            try nodes.register{value: seed % 2 == 0 ? MIN_STAKE : 1}(small, 0, N, "h", address(0), 1, 1, ALL_CAPS) {} catch (bytes memory err) {
                _rec(err);
            }
        } else {
            try nodes.setPayout(address(0)) {} catch (bytes memory err) {
                _rec(err);
            }
        }
    }

    function withdrawCredits(uint256 seed) external {
        address a = seed % 2 == 0 ? requesters[seed % 3] : keepers[seed % 2];
        vm.prank(a);
        try market.withdraw() {} catch (bytes memory err) {
            _rec(err);
        }
    }

    /// @dev Calls only the wrong parties make, and registrations that must fail.
    function misuse(uint256 seed) external {
        uint256 f = seed % 14;
        bytes memory err;
        if (f == 0) {
            try market.depositSlashed{value: 1}() {} catch (bytes memory e) { err = e; }
        } else if (f == 1) {
            try nodes.settle(new uint256[](0), new uint256[](0)) {} catch (bytes memory e) { err = e; }
        } else if (f == 2) {
            try disputes.close(1) {} catch (bytes memory e) { err = e; }
        } else if (f == 3) {
            try nodes.setJobMarket(address(1)) {} catch (bytes memory e) { err = e; }
        } else if (f == 4) {
            try disputes.setJobMarket(address(1)) {} catch (bytes memory e) { err = e; }
        } else if (f == 5) {
            try new Disputes(nodes, 0) {} catch (bytes memory e) { err = e; }
        } else if (f == 6) {
            try new JobMarket(models, nodes, disputes, JobStore.Config(MAX_JOB, 0, 1, 1, 1, 1, 0)) {} catch (bytes memory e) { err = e; }
        } else if (f == 7) {
            try models.registerModel("", 1, 1, 0, 0, 0) {} catch (bytes memory e) { err = e; }
        } else if (f == 8) {
            try models.registerModel("s", 1, 1, 0, 0, 0) {} catch (bytes memory e) { err = e; }
        } else if (f == 9) {
            vm.prank(requesters[0]);
            try models.deprecate(small) {} catch (bytes memory e) { err = e; }
        } else if (f == 10) {
            bytes32 gone = models.registerModel(_decimal(++deprecated), 1, 1, 0, 0, 0);
            models.deprecate(gone);
            vm.prank(requesters[1]);
            try nodes.register{value: MIN_STAKE}(gone, 0, 1, "h", address(0), 1, 1, ALL_CAPS) {} catch (bytes memory e) { err = e; }
        } else if (f == 11) {
            vm.startPrank(requesters[2]); // not a node
            try nodes.register{value: MIN_STAKE}(small, 2, 1, "h", address(0), 1, 1, ALL_CAPS) {} catch (bytes memory e) { _rec(e); }
            try nodes.register{value: MIN_STAKE}(small, 0, 1, "h", address(0), 1, 1, 1) {} catch (bytes memory e) { _rec(e); }
            try nodes.register{value: 1}(small, 0, 1, "h", address(0), 1, 1, ALL_CAPS) {} catch (bytes memory e) { _rec(e); }
            try nodes.requestUnbond() {} catch (bytes memory e) { err = e; }
            vm.stopPrank();
        } else if (f == 12) {
            _refuserNode();
            return;
        } else {
            _refuserRequester();
            return;
        }
        _rec(err);
    }

    /// @dev A node whose payout refuses ETH cannot withdraw until it points its payout elsewhere.
    function _refuserNode() internal {
        vm.prank(refuserNode);
        try nodes.requestUnbond() {} catch (bytes memory e) {
            _rec(e);
        }
        vm.warp(block.timestamp + UNBONDING);
        try nodes.withdrawStake(refuserNode) {} catch (bytes memory e) {
            _rec(e); // NodeTransferFailed
        }
    }

    /// @dev A requester contract that refuses ETH cannot take its refund (JobTransferFailed).
    function _refuserRequester() internal {
        uint256 before = market.creditsOf(address(refuser));
        if (before == 0) {
            (uint256[] memory h, uint256[] memory prices) = _plan(1, 1);
            JobMarket.JobParams memory p = params();
            uint256 fee = market.feeFloor(small, h, p.maxTokens, 0, 0) + 1;
            uint256 id = refuser.submit{value: fee}(market, small, h, p);
            openEscrow += fee;
            feesPaid[address(refuser)] += fee;
            vm.warp(block.timestamp + 300);
            Snapshot memory b = _snapshot();
            market.finalize(id, h, JobStore.Terms(address(refuser), small, fee, _weight(h, prices), prices));
            openEscrow -= fee;
            granted[address(refuser)] += market.creditsOf(address(refuser));
            granted[address(this)] += market.creditsOf(address(this)); // a keeper reward to this handler
            _settledOutside(b);
        }
        try refuser.withdraw(market) {} catch (bytes memory e) {
            _rec(e);
        }
    }
}
