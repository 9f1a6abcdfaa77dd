// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title JobPlan
/// @notice Pure helpers over a packed plan: validation, tails, settlement shares.
/// @dev A hop is one word: node (bits 0-159), start (160-175), end (176-191), replica (192-199).
///      Hops are grouped by replica 0..R-1, each replica's hops in block order.
library JobPlan {
    // -------------------------------------------------------------- constants
    uint256 internal constant MAX_REPLICAS = 8; // replica bitmasks are uint8
    uint8 internal constant OUTCOME_SUCCESS = 1; // as NodeRegistry.OUTCOME_*
    uint8 internal constant OUTCOME_FAILURE = 2;
    uint8 internal constant OUTCOME_SLASH = 3;

    /// @dev Per hop of a plan: who, what happened (OUTCOME_*), what they earned.
    struct Settlement {
        address[] who;
        uint8[] outcomes;
        uint256[] paid;
        uint256 total; // sum(paid): the fee when a majority exists, else 0
    }

    // ----------------------------------------------------------------- errors
    /// @notice A plan needs 1..MAX_REPLICAS replicas with hops grouped by replica index.
    error JobPlanBadReplicas(uint256 hop, uint256 replica);
    /// @notice A hop starts after the previous one ended (blocks left out).
    error JobPlanGap(uint256 replica, uint256 hop, uint16 expectedStart, uint16 start);
    /// @notice A hop starts before the previous one ended, is empty or passes the last block.
    error JobPlanOverlap(uint256 replica, uint256 hop, uint16 expectedStart, uint16 start, uint16 end);
    /// @notice A replica stops before the model's last block.
    error JobPlanIncomplete(uint256 replica, uint16 coveredTo, uint16 numBlocks);
    /// @notice A node appears twice in a plan.
    error JobPlanNodeReused(address node);

    // --------------------------------------------------------------- internal
    /// @dev Validates coverage and node-disjointness; returns the number of replicas.
    function check(uint256[] calldata hops, uint16 modelBlocks) internal pure returns (uint8) {
        if (hops.length == 0) revert JobPlanBadReplicas(0, 0);
        uint256 replica;
        uint16 pos;
        for (uint256 i; i < hops.length; ++i) {
            uint256 h = hops[i];
            uint256 rep = uint8(h >> 192);
            if (rep != replica) {
                if (rep != replica + 1 || i == 0) revert JobPlanBadReplicas(i, rep);
                if (pos != modelBlocks) revert JobPlanIncomplete(replica, pos, modelBlocks);
                replica = rep;
                pos = 0;
            }
            uint16 start = uint16(h >> 160);
            uint16 end = uint16(h >> 176);
            if (start > pos) revert JobPlanGap(replica, i, pos, start);
            if (start < pos || end <= start || end > modelBlocks) revert JobPlanOverlap(replica, i, pos, start, end);
            pos = end;
            address node = address(uint160(h));
            for (uint256 k; k < i; ++k) {
                if (address(uint160(hops[k])) == node) revert JobPlanNodeReused(node);
            }
        }
        if (pos != modelBlocks) revert JobPlanIncomplete(replica, pos, modelBlocks);
        if (replica >= MAX_REPLICAS) revert JobPlanBadReplicas(hops.length - 1, replica);
        return uint8(replica + 1);
    }

    function tailOf(uint256[] calldata hops, uint256 replica) internal pure returns (address tail) {
        for (uint256 i; i < hops.length; ++i) {
            if (uint8(hops[i] >> 192) == replica) tail = address(uint160(hops[i]));
        }
    }

    /// @dev The model's number of blocks: where replica 0 ends.
    function numBlocks(uint256[] calldata hops) internal pure returns (uint256 n) {
        for (uint256 i; i < hops.length && uint8(hops[i] >> 192) == 0; ++i) n = uint16(hops[i] >> 176);
    }

    /// @dev Per hop: outcome and pay. Winners share `fee` pro rata by blocks served, the
    ///      integer-division dust going to the first winning replica's tail; revealed losers
    ///      fail; tails that committed and did not reveal are slashed.
    function outcomes(uint256[] calldata hops, uint256 fee, uint8 winners, uint8 committed, uint8 revealed)
        internal
        pure
        returns (Settlement memory st)
    {
        uint256 n = hops.length;
        st.who = new address[](n);
        st.outcomes = new uint8[](n);
        st.paid = new uint256[](n);
        uint256 perBlock = winners == 0 ? 0 : fee / (popcount(winners) * numBlocks(hops));
        uint256 dustIndex = type(uint256).max;
        for (uint256 i; i < n; ++i) {
            uint256 h = hops[i];
            uint8 bit = uint8(1 << uint8(h >> 192));
            st.who[i] = address(uint160(h));
            bool isTail = i + 1 == n || uint8(hops[i + 1] >> 192) != uint8(h >> 192);
            if (winners & bit != 0) {
                st.outcomes[i] = OUTCOME_SUCCESS;
                st.paid[i] = perBlock * (uint16(h >> 176) - uint16(h >> 160));
                st.total += st.paid[i];
                if (isTail && dustIndex == type(uint256).max) dustIndex = i;
            } else if (committed & bit != 0 && revealed & bit == 0) {
                if (isTail) st.outcomes[i] = OUTCOME_SLASH;
            } else if (winners != 0 && revealed & bit != 0) {
                st.outcomes[i] = OUTCOME_FAILURE;
            }
        }
        if (winners != 0) {
            st.paid[dustIndex] += fee - st.total;
            st.total = fee;
        }
    }

    function popcount(uint8 x) internal pure returns (uint256 c) {
        for (; x != 0; x &= x - 1) ++c;
    }
}
