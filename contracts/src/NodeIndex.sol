// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title NodeIndex
/// @notice A set of addresses with O(1) add and remove (array + position map, swap-and-pop) and
///         paginated reads: what NodeRegistry keeps per model (all nodes, and full nodes).
library NodeIndex {
    struct Set {
        address[] items;
        mapping(address => uint256) indexPlusOne; // 0: absent
    }

    /// @dev Add `a` unless present.
    function add(Set storage s, address a) internal {
        if (s.indexPlusOne[a] != 0) return;
        s.items.push(a);
        s.indexPlusOne[a] = s.items.length;
    }

    /// @dev Remove `a` if present: the last item takes its place.
    function remove(Set storage s, address a) internal {
        uint256 i = s.indexPlusOne[a];
        if (i == 0) return;
        address last = s.items[s.items.length - 1];
        s.items[i - 1] = last;
        s.indexPlusOne[last] = i;
        s.items.pop();
        delete s.indexPlusOne[a];
    }

    function length(Set storage s) internal view returns (uint256) {
        return s.items.length;
    }

    function get(Set storage s, uint256 i) internal view returns (address) {
        return s.items[i];
    }

    /// @dev Items [offset, offset + limit) clipped to the set's length.
    function page(Set storage s, uint256 offset, uint256 limit) internal view returns (address[] memory out) {
        uint256 n = s.items.length;
        uint256 end = offset >= n ? offset : (limit > n - offset ? n : offset + limit);
        out = new address[](end - offset);
        for (uint256 i = offset; i < end; ++i) out[i - offset] = s.items[i];
    }
}
