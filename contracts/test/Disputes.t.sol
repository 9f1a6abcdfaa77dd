// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {JobStore} from "../src/JobStore.sol";
import {Disputes} from "../src/Disputes.sol";

contract DisputesTest is Base {
    bytes internal constant OUT = hex"0000000100000002";
    bytes internal constant BAD = hex"0000000100000003";
    address[5] internal full;

    function setUp() public override {
        super.setUp();
        for (uint256 k; k < 5; ++k) full[k] = fullNode(k);
    }

    /// @dev A plan3x3 job whose replicas reveal outs[r] (empty: silent), finalized into a dispute.
    function disputed(uint256 fee, bytes[3] memory outs) internal returns (uint256 id) {
        id = submit(fee);
        for (uint256 r; r < 3; ++r) if (outs[r].length != 0) doCommit(id, r, outs[r], fee);
        vm.warp(block.timestamp + 101);
        for (uint256 r; r < 3; ++r) if (outs[r].length != 0) doReveal(id, r, outs[r]);
        vm.warp(block.timestamp + 100);
        fin(id, fee);
        require(market.getJob(id).status == 3, "disputed");
    }

    function draw(uint256 id, uint256 fee) internal returns (address[] memory v) {
        vm.roll(block.number + 1); // the block after the dispute's
        market.drawVerifiers(id, plan3x3(), terms(fee));
        v = disputes.verifiersOf(id);
    }

    function attestAll(uint256 id, address[] memory v, uint8[3] memory verdicts) internal {
        uint8[] memory d = new uint8[](3);
        for (uint256 r; r < 3; ++r) d[r] = verdicts[r];
        for (uint256 i; i < v.length; ++i) {
            vm.prank(v[i]);
            disputes.attest(id, d);
        }
    }

    function test_DivergenceIsJudgedByDrawnVerifiers() public {
        uint256 fee = 1 ether;
        uint256 id = disputed(fee, [OUT, BAD, OUT]);
        vm.expectRevert(abi.encodeWithSelector(JobStore.JobAwaitingVerifiers.selector, id, block.number));
        fin(id, fee);
        vm.expectRevert(abi.encodeWithSelector(JobStore.JobSeedNotReady.selector, id, block.number, block.number));
        market.drawVerifiers(id, plan3x3(), terms(fee));
        address[] memory v = draw(id, fee);
        require(v.length == 3, "K verifiers");
        for (uint256 i; i < 3; ++i) {
            bool isFull;
            for (uint256 k; k < 5; ++k) isFull = isFull || v[i] == full[k];
            require(isFull, "drawn from the full nodes, never from the plan");
        }
        vm.expectRevert(abi.encodeWithSelector(Disputes.DisputeStillOpen.selector, id, block.timestamp + ATTEST, block.timestamp));
        fin(id, fee);
        attestAll(id, v, [uint8(1), 3, 1]); // replica 1: its second served hop (node[4]) is faulty
        Books memory before = books();
        vm.recordLogs();
        fin(id, fee);
        Finalized memory f = finalizedEvent(id);
        uint256 share = (fee - fee / 10) / 9;
        require(f.outcome == 2 && f.paidMask == 5, "honest replicas 0 and 2 paid");
        require(f.outcomes[4] == 3 && f.slashed[4] == SLASH && f.burned == 0, "the faulty hop is slashed");
        require(f.outcomes[3] == 0 && f.outcomes[5] == 0, "the rest of the faulty replica: unpaid, no penalty");
        require(f.refund == fee - fee / 10 - 6 * share, "the faulty replica's pay goes back to the requester");
        uint256 pot = fee / 10 + SLASH;
        for (uint256 i; i < 3; ++i) {
            uint256 want = i == 0 ? pot - (pot / 3) * 2 : pot / 3;
            require(earnings(v[i]) == want, "verifiers share the reserve and the slashed stake");
        }
        require(market.creditsOf(requester) - before.credits == f.refund, "requester: the refund only");
        require(nodes.getNode(node[4]).reputation == 0.8e18 && nodes.getNode(node[3]).reputation == 1e18, "rep");
    }

    function test_AbsentAndDissentingVerifiersLoseReputation() public {
        uint256 id = disputed(1 ether, [OUT, BAD, OUT]);
        address[] memory v = draw(id, 1 ether);
        uint8[] memory honest = new uint8[](3);
        (honest[0], honest[1], honest[2]) = (1, 1, 1);
        uint8[] memory other = new uint8[](3);
        (other[0], other[1], other[2]) = (1, 2, 1);
        vm.prank(v[0]);
        disputes.attest(id, honest);
        vm.prank(v[1]);
        disputes.attest(id, other);
        vm.prank(v[2]);
        disputes.attest(id, honest);
        fin(id, 1 ether);
        require(nodes.getNode(v[1]).reputation == 0.8e18 && earnings(v[1]) == 0, "dissenter");
        require(nodes.getNode(v[0]).reputation == 1.01e18 && earnings(v[0]) > 0, "majority");
        require(earnings(node[3]) > 0, "honest divergence is paid");
    }

    function test_NobodyAttestsRefundsTheReserveAndBurnsSlashes() public {
        uint256 fee = 1 ether;
        uint256 id = submit(fee);
        for (uint256 r; r < 3; ++r) doCommit(id, r, r == 1 ? BAD : OUT, fee);
        doReveal(id, 0, OUT);
        doReveal(id, 1, BAD); // replica 2 stays silent: slashed on evidence of its commitment
        vm.warp(block.timestamp + 201);
        fin(id, fee);
        address[] memory v = draw(id, fee);
        vm.warp(block.timestamp + ATTEST + 1);
        vm.recordLogs();
        fin(id, fee);
        Finalized memory f = finalizedEvent(id);
        require(f.outcome == 3 && f.paidMask == 0 && f.refund == fee, "nobody paid, all refunded");
        require(f.outcomes[8] == 3 && f.burned == SLASH, "the silent tail's stake is burned");
        for (uint256 i; i < v.length; ++i) require(nodes.getNode(v[i]).reputation == 0.8e18, "absent verifiers");
    }

    /// A requester cannot get work for free by provoking a dispute where nobody can judge it.
    function test_NoEligibleVerifierPaysEveryRevealedReplica() public {
        for (uint256 k; k < 5; ++k) {
            vm.prank(full[k]);
            nodes.requestUnbond();
        }
        uint256 id = disputed(1 ether, [OUT, BAD, OUT]);
        vm.roll(block.number + 2);
        vm.recordLogs();
        market.drawVerifiers(id, plan3x3(), terms(1 ether));
        lastPlan = plan3x3();
        Finalized memory f = finalizedEvent(id);
        require(f.outcome == 4 && f.paidMask == 7 && f.burned == 0, "no verdict: every revealed replica is paid");
        uint256 share = (1 ether - 0.1 ether) / 9;
        require(f.refund == 1 ether - 9 * share, "the requester gets the reserve back, not the node pay");
        for (uint256 i; i < 9; ++i) require(earnings(node[i]) == share, "nobody works for free");
    }

    function test_ExpiredSeedReArmsTheDraw() public {
        uint256 id = disputed(1 ether, [OUT, BAD, OUT]);
        uint256 seedBlock = market.getJob(id).seedBlock;
        vm.roll(seedBlock + 300);
        market.drawVerifiers(id, plan3x3(), terms(1 ether));
        JobStore.Job memory j = market.getJob(id);
        require(j.status == 3 && j.seedBlock == block.number, "re-armed, nobody drawn");
        require(disputes.verifiersOf(id).length == 0, "no draw from a stale seed");
        require(draw(id, 1 ether).length == 3, "drawn after re-arming");
    }

    function test_VerifierErrors() public {
        uint256 id = disputed(1 ether, [OUT, BAD, bytes("")]);
        uint8[] memory d = new uint8[](3);
        vm.expectRevert(abi.encodeWithSelector(Disputes.DisputeNotOpen.selector, id));
        disputes.attest(id, d);
        address[] memory v = draw(id, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(Disputes.DisputeNotVerifier.selector, id, address(this)));
        disputes.attest(id, d);
        vm.prank(v[0]);
        vm.expectRevert(abi.encodeWithSelector(Disputes.DisputeBadVerdicts.selector, id, 2, 3));
        disputes.attest(id, new uint8[](2));
        d[1] = 5; // replica 1 served 3 words: verdicts go up to 2 + 2
        vm.prank(v[0]);
        vm.expectRevert(abi.encodeWithSelector(Disputes.DisputeBadVerdict.selector, id, 1, 5, 4));
        disputes.attest(id, d);
        (d[1], d[2]) = (1, 1); // replica 2 never revealed: only 0
        vm.prank(v[0]);
        vm.expectRevert(abi.encodeWithSelector(Disputes.DisputeBadVerdict.selector, id, 2, 1, 0));
        disputes.attest(id, d);
        d[2] = 0;
        vm.prank(v[0]);
        disputes.attest(id, d);
        vm.prank(v[0]);
        vm.expectRevert(abi.encodeWithSelector(Disputes.DisputeAlreadyAttested.selector, id, v[0]));
        disputes.attest(id, d);
        vm.warp(block.timestamp + ATTEST + 1);
        vm.prank(v[1]);
        vm.expectRevert(abi.encodeWithSelector(Disputes.DisputeAttestClosed.selector, id, block.timestamp - 1, block.timestamp));
        disputes.attest(id, d);
        vm.expectRevert(abi.encodeWithSelector(Disputes.DisputeOnlyJobMarket.selector, address(this)));
        disputes.close(id);
        vm.expectRevert(abi.encodeWithSelector(JobStore.JobNotDisputed.selector, id, uint8(4)));
        market.drawVerifiers(id, plan3x3(), terms(1 ether));
    }

    function test_KeeperIsPaidOnlyAfterTheGrace() public {
        uint256 fee = 1 ether;
        uint256 id = submit(fee);
        vm.warp(block.timestamp + 201);
        address keeper = address(0xCAFE);
        vm.prank(keeper);
        fin(id, fee);
        require(market.creditsOf(keeper) == 0, "inside the grace: no reward");
        id = submit(fee);
        vm.warp(block.timestamp + 201 + GRACE);
        vm.prank(keeper);
        fin(id, fee);
        require(market.creditsOf(keeper) == fee / 100, "a stale job pays its keeper");
        require(market.creditsOf(requester) == 2 * fee - fee / 100, "from the reserve");
    }

    function _optimistic(uint16 auditBps) internal returns (uint256 id, uint256[] memory h, JobStore.Terms memory t) {
        h = new uint256[](1);
        h[0] = hop(full[0], 0, 30, 0);
        JobMarket.JobParams memory p = params();
        p.spec = (1 << 16) | (uint256(auditBps) << 24); // optimistic
        vm.prank(requester);
        id = market.submitJob{value: 1 ether}(modelId, h, p);
        t = JobStore.Terms(requester, modelId, 1 ether, 30 * uint256(PRICE), prices(1));
        vm.prank(full[0]);
        commitTo(id, 0, commitment(id, 0, OUT, 1), h, digestOf(t));
        vm.prank(full[0]);
        market.reveal(id, 0, OUT, 0, 1, SALT);
    }

    function test_OptimisticJobsAreAuditedByTheNextBlocksHash() public {
        (uint256 id, uint256[] memory h, JobStore.Terms memory t) = _optimistic(0);
        market.finalize(id, h, t);
        require(earnings(full[0]) > 0, "never audited: paid at once");
        (id, h, t) = _optimistic(10_000);
        market.finalize(id, h, t);
        require(market.getJob(id).status == 3, "always audited: disputed");
        (id, h, t) = _optimistic(5_000);
        vm.expectRevert(abi.encodeWithSelector(JobStore.JobSeedNotReady.selector, id, block.number + 1, block.number));
        market.finalize(id, h, t);
        uint256 commitBlock = block.number;
        vm.roll(commitBlock + 2);
        bool audit = uint256(keccak256(abi.encode(blockhash(commitBlock + 1), id))) % 10_000 < 5_000;
        market.finalize(id, h, t);
        require((market.getJob(id).status == 3) == audit, "audited iff the draw says so");
    }
}
