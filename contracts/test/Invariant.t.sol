// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.sol";

/// @dev Random jobs, commits, reveals, clock moves, finalizations and withdrawals, with the
///      bookkeeping the invariants compare against.
contract Handler is Base {
    struct Open {
        uint256 id;
        uint256 fee;
    }

    Open[] internal open;
    uint256 public escrow; // fees of unfinalized jobs
    uint256 public refunded; // credits granted to the requester
    uint256 public requesterWithdrawn;
    mapping(address => uint256) public earned; // earnings granted per node
    mapping(address => uint256) public withdrawn; // earnings paid per node
    bool public breach; // a non-tail commit or reveal succeeded
    string public eventWrong; // why a JobFinalized event disagreed with what was credited (empty: never)
    bool internal ready;

    /// @dev Deploy once; the fuzzer calling it again is a no-op.
    function setUp() public override {
        if (ready) return;
        ready = true;
        super.setUp();
    }

    function submitJob(uint96 seed) external {
        uint256 fee = uint256(seed) % 10 ether + 1;
        uint256 id = submit(fee);
        open.push(Open(id, fee));
        escrow += fee;
    }

    function commitSome(uint256 js, uint8 r, bool good) external {
        if (open.length == 0) return;
        Open memory o = open[js % open.length];
        r = r % 3;
        address tail = node[3 * r + 2];
        bytes memory out = good ? bytes(hex"01") : bytes(hex"02");
        vm.prank(tail);
        try market.commit(o.id, r, commitment(o.id, r, out, tail), modelId, o.fee, plan3x3()) {} catch {}
        vm.prank(node[3 * r]); // a head is never a tail
        try market.commit(o.id, r, commitment(o.id, r, out, node[3 * r]), modelId, o.fee, plan3x3()) {
            breach = true;
        } catch {}
    }

    function revealSome(uint256 js, uint8 r, bool good) external {
        if (open.length == 0) return;
        Open memory o = open[js % open.length];
        r = r % 3;
        bytes memory out = good ? bytes(hex"01") : bytes(hex"02");
        vm.prank(node[3 * r + 1]);
        try market.reveal(o.id, r, out, bytes32(uint256(7))) {
            breach = true;
        } catch {}
        vm.prank(node[3 * r + 2]);
        try market.reveal(o.id, r, out, bytes32(uint256(7))) {} catch {}
    }

    function warp(uint16 dt) external {
        vm.warp(block.timestamp + dt);
    }

    function finalizeSome(uint256 js) external {
        if (open.length == 0) return;
        uint256 k = js % open.length;
        Open memory o = open[k];
        Books memory before = books();
        vm.recordLogs();
        try market.finalize(o.id, modelId, o.fee, plan3x3()) {
            escrow -= o.fee;
            for (uint256 i; i < 9; ++i) earned[node[i]] += earnings(node[i]) - before.earnings[i];
            refunded += market.creditsOf(requester) - before.credits;
            string memory why = eventMismatch(finalizedEvent(o.id), before, o.fee);
            if (bytes(why).length != 0) eventWrong = why;
            open[k] = open[open.length - 1];
            open.pop();
            // finalizing twice must fail
            try market.finalize(o.id, modelId, o.fee, plan3x3()) {
                breach = true;
            } catch {}
        } catch {}
    }

    function topUp(uint8 i) external {
        address n = node[i % 9];
        vm.deal(n, 1 ether);
        vm.prank(n);
        try nodes.addStake{value: 0.5 ether}() {} catch {}
    }

    function withdrawCredits() external {
        uint256 c = market.creditsOf(requester);
        vm.prank(requester);
        try market.withdraw() {
            requesterWithdrawn += c;
        } catch {}
    }

    function withdrawEarnings(uint8 i) external {
        address n = node[i % 9];
        uint256 e = earnings(n);
        try nodes.withdrawEarnings(n) {
            withdrawn[n] += e;
        } catch {}
    }

    function nodeState(uint256 i) external view returns (address n, uint256 stake, uint256 earn) {
        n = node[i];
        stake = nodes.getNode(n).stake;
        earn = nodes.getNode(n).earnings;
    }

    function contracts() external view returns (address, address, address) {
        return (address(market), address(nodes), requester);
    }
}

contract InvariantTest {
    Handler internal h;

    function setUp() public {
        h = new Handler();
        h.setUp();
    }

    function targetContracts() public view returns (address[] memory t) {
        t = new address[](1);
        t[0] = address(h);
    }

    /// JobMarket holds exactly open escrow plus unwithdrawn credits.
    function invariant_MarketBalanceIsEscrowPlusCredits() public view {
        (address market, , address requester) = h.contracts();
        (bool ok, bytes memory ret) = market.staticcall(abi.encodeWithSignature("creditsOf(address)", requester));
        require(ok, "creditsOf");
        require(market.balance == h.escrow() + abi.decode(ret, (uint256)), "market balance");
    }

    /// NodeRegistry holds exactly stake plus unwithdrawn earnings; no node withdrew more than it earned.
    function invariant_RegistryBalanceIsStakePlusEarnings() public view {
        (, address nodes, ) = h.contracts();
        uint256 sum;
        for (uint256 i; i < 9; ++i) {
            (address n, uint256 stake, uint256 earn) = h.nodeState(i);
            sum += stake + earn;
            require(h.withdrawn(n) + earn == h.earned(n), "node withdrew more than it earned");
        }
        require(nodes.balance == sum, "registry balance");
    }

    /// The requester never takes back more than was refunded; no non-tail commit/reveal; no double finalize.
    function invariant_NoDoubleRefundNoBreach() public view {
        require(h.requesterWithdrawn() <= h.refunded(), "double refund");
        require(!h.breach(), "breach");
    }

    /// Every JobFinalized event says exactly what finalize credited and slashed, hop by hop.
    function invariant_FinalizedEventIsWhatWasCredited() public view {
        string memory why = h.eventWrong();
        require(bytes(why).length == 0, why);
    }
}
