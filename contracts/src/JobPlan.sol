// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title JobPlan
/// @notice Pure helpers over a packed plan: validation, tails, routes, weights and payouts.
/// @dev A hop is one word: node (bits 0-159), start (160-175), end (176-191), replica (192-199),
///      standby flag (bit 200); bits 201-255 are zero. Words are grouped by replica 0..R-1; in a
///      replica the primaries cover [0, numBlocks) in block order and a standby word directly follows
///      the primary it backs, with the same span. servedMask bit i = the replica's i-th word served.
library JobPlan {
    // -------------------------------------------------------------- constants
    uint256 internal constant MAX_REPLICAS = 8; // replica bitmasks are uint8
    uint256 internal constant MAX_WORDS = 64; // words per replica (servedMask is uint64)
    uint8 internal constant OUTCOME_SUCCESS = 1; // as NodeRegistry.OUTCOME_*
    uint8 internal constant OUTCOME_SLASH = 3;
    uint256 internal constant NONE = type(uint256).max;

    // ----------------------------------------------------------------- errors
    /// @notice A plan needs 1..MAX_REPLICAS replicas with hops grouped by replica index.
    error JobPlanBadReplicas(uint256 hop, uint256 replica);
    /// @notice A hop word has bits set above bit 200.
    error JobPlanHopJunk(uint256 hop, uint256 word);
    /// @notice A hop starts after the previous one ended (blocks left out).
    error JobPlanGap(uint256 replica, uint256 hop, uint16 expectedStart, uint16 start);
    /// @notice A hop starts before the previous one ended.
    error JobPlanOverlap(uint256 replica, uint256 hop, uint16 expectedStart, uint16 start);
    /// @notice A hop's span is empty or reversed (end <= start).
    error JobPlanEmptyHop(uint256 replica, uint256 hop, uint16 start, uint16 end);
    /// @notice A hop ends past the model's last block.
    error JobPlanPastEnd(uint256 replica, uint256 hop, uint16 end, uint16 numBlocks);
    /// @notice A standby must directly follow a primary of its replica and have its exact span.
    error JobPlanBadStandby(uint256 replica, uint256 hop);
    /// @notice A replica has more than MAX_WORDS hop words.
    error JobPlanTooManyHops(uint256 replica, uint256 hop, uint256 maxWords);
    /// @notice A replica stops before the model's last block.
    error JobPlanIncomplete(uint256 replica, uint16 coveredTo, uint16 numBlocks);
    /// @notice A node appears twice in a plan.
    error JobPlanNodeReused(address node);

    // --------------------------------------------------------------- internal
    /// @dev Validates the plan's shape and node-disjointness in O(hops); returns the number of replicas
    ///      and the digest of the tail words (see scan).
    function check(uint256[] calldata hops, uint16 numBlocks) internal pure returns (uint8, bytes32 tails) {
        if (hops.length == 0) revert JobPlanBadReplicas(0, 0);
        uint256[] memory seen = newSet(hops.length);
        uint256 replica;
        uint256 words;
        uint256 pos;
        uint256 prev;
        for (uint256 i; i < hops.length; ++i) {
            uint256 h = hops[i];
            if (h >> 201 != 0) revert JobPlanHopJunk(i, h);
            if ((h >> 192) & 0xff != replica) {
                if ((h >> 192) & 0xff != replica + 1 || i == 0) revert JobPlanBadReplicas(i, (h >> 192) & 0xff);
                if (pos != numBlocks) revert JobPlanIncomplete(replica, uint16(pos), numBlocks);
                tails = _chainTail(tails, hops, i - 1);
                (replica, pos, words) = (replica + 1, 0, 0);
            }
            if (isStandby(h)) {
                // the previous word: a primary of this replica with the same span (bits 160-191)
                if (words == 0 || isStandby(prev) || (prev ^ h) >> 160 & 0xffffffff != 0) {
                    revert JobPlanBadStandby(replica, i);
                }
            } else {
                pos = _primary(h, pos, replica, i, numBlocks);
            }
            // cannot overflow: words <= hops.length
            unchecked {
                if (++words > MAX_WORDS) revert JobPlanTooManyHops(replica, i, MAX_WORDS);
            }
            if (!insert(seen, address(uint160(h)))) revert JobPlanNodeReused(address(uint160(h)));
            prev = h;
        }
        if (pos != numBlocks) revert JobPlanIncomplete(replica, uint16(pos), numBlocks);
        if (replica >= MAX_REPLICAS) revert JobPlanBadReplicas(hops.length - 1, replica);
        return (uint8(replica + 1), _chainTail(tails, hops, hops.length - 1));
    }

    /// @dev A primary hop's span against the blocks covered so far (`pos`); returns its end.
    function _primary(uint256 h, uint256 pos, uint256 replica, uint256 i, uint16 numBlocks)
        private
        pure
        returns (uint256 end)
    {
        uint256 start = (h >> 160) & 0xffff;
        end = (h >> 176) & 0xffff;
        if (start > pos) revert JobPlanGap(replica, i, uint16(pos), uint16(start));
        if (start < pos) revert JobPlanOverlap(replica, i, uint16(pos), uint16(start));
        if (end <= start) revert JobPlanEmptyHop(replica, i, uint16(start), uint16(end));
        if (end > numBlocks) revert JobPlanPastEnd(replica, i, uint16(end), numBlocks);
    }

    /// @dev Chain the tail words of the replica whose last word is hops[last] into digest d.
    function _chainTail(bytes32 d, uint256[] calldata hops, uint256 last) private pure returns (bytes32) {
        if (isStandby(hops[last])) d = hashPair(d, hops[last - 1]);
        return hashPair(d, hops[last]);
    }

    function isStandby(uint256 h) internal pure returns (bool) {
        return (h >> 200) & 1 == 1;
    }

    /// @dev One pass over a checked plan: the digest of its tail words (each replica's last primary,
    ///      then its standby if any, chained as d = keccak256(abi.encode(d, word)) from 0) and where
    ///      each replica's words start (firsts[r]; firsts[R] = hops.length).
    function scan(uint256[] calldata hops)
        internal
        pure
        returns (bytes32 tails, uint256[MAX_REPLICAS + 1] memory firsts)
    {
        uint256 n = hops.length;
        uint256 r;
        for (uint256 i; i < n; ++i) {
            if (i + 1 < n && (hops[i + 1] ^ hops[i]) >> 192 & 0xff == 0) continue; // not its replica's last word
            tails = _chainTail(tails, hops, i);
            firsts[++r] = i + 1;
        }
    }

    /// @dev The same digest over the tail words themselves.
    function chain(uint256[] calldata tails) internal pure returns (bytes32 d) {
        for (uint256 i; i < tails.length; ++i) d = hashPair(d, tails[i]);
    }

    /// @dev Replica r's tail and the tail's standby (address(0) if none), from the tail words.
    function tailOf(uint256[] calldata tails, uint256 replica) internal pure returns (address tail, address standby) {
        for (uint256 i; i < tails.length; ++i) {
            uint256 w = tails[i];
            if ((w >> 192) & 0xff != replica) continue;
            if (isStandby(w)) standby = address(uint160(w));
            else tail = address(uint160(w));
        }
    }

    /// @dev The plan index of the word that committed a replica whose words end before `end`: its
    ///      tail, or the tail's standby when `byStandby`.
    function committerWord(uint256[] calldata hops, uint256 end, bool byStandby) internal pure returns (uint256) {
        return end - (isStandby(hops[end - 1]) && !byStandby ? 2 : 1);
    }

    /// @dev Whether `mask` is a route of the replica with words [first, end): exactly one of each
    ///      primary and its standby, nothing past its words, and the committer's word served.
    function validRoute(uint256[] calldata hops, uint256 first, uint256 end, uint64 mask, bool byStandby)
        internal
        pure
        returns (bool)
    {
        uint256 count = end - first;
        if (count < 64 && mask >> count != 0) return false;
        for (uint256 j; j < count; ++j) {
            if (isStandby(hops[first + j])) continue;
            bool p = (mask >> j) & 1 == 1;
            bool s = j + 1 < count && isStandby(hops[first + j + 1]) && (mask >> (j + 1)) & 1 == 1;
            if (p == s) return false;
        }
        return (mask >> (committerWord(hops, end, byStandby) - first)) & 1 == 1;
    }

    /// @dev The plan index of the k-th served word of the replica with words starting at `first`.
    function servedWord(uint256 first, uint64 mask, uint256 k) internal pure returns (uint256) {
        for (uint256 j; j < 64; ++j) {
            if ((mask >> j) & 1 == 1) {
                if (k == 0) return first + j;
                --k;
            }
        }
        return NONE;
    }

    /// @dev Per hop word, outcome and pay as `paid | outcome << 192`, and their total. Served words of
    ///      replicas in `paidMask` share the pool in proportion to price x blocks out of the plan's
    ///      weight (pw = [pool, weight]; with weight 0 every node is free and shares go by blocks out
    ///      of R x numBlocks); `slashAt` words are slashed. Undistributed wei stay with the caller.
    function payouts(
        uint256[] calldata hops,
        uint256[] calldata prices,
        uint256[2] memory pw,
        uint64[MAX_REPLICAS] memory served,
        uint8 paidMask,
        uint256[MAX_REPLICAS] memory slashAt
    ) internal pure returns (uint256[] memory entries, uint256 total) {
        entries = new uint256[](hops.length);
        bool free = pw[1] == 0;
        if (free) {
            uint256 last = hops[hops.length - 1];
            pw[1] = ((last >> 192 & 0xff) + 1) * (last >> 176 & 0xffff); // R x numBlocks
        }
        uint256 j; // word index inside the replica
        for (uint256 i; i < hops.length; ++i) {
            uint256 r = (hops[i] >> 192) & 0xff;
            j = i == 0 || (hops[i - 1] >> 192) & 0xff != r ? 0 : j + 1;
            if (slashAt[r] == i) {
                entries[i] = uint256(OUTCOME_SLASH) << 192;
            } else if (paidMask & (1 << r) != 0 && (served[r] >> j) & 1 == 1) {
                uint256 pay = _share(hops[i], free ? 1 : prices[i], pw);
                entries[i] = pay | (uint256(OUTCOME_SUCCESS) << 192);
                total += pay;
            }
        }
    }

    /// @dev A served word's pay: pool x price x blocks / weight (pw = [pool, weight]; price 1 when free).
    function _share(uint256 h, uint256 price, uint256[2] memory pw) private pure returns (uint256) {
        // cannot overflow: pool < 2^96, price < 2^80, blocks < 2^16; end > start for a checked plan
        unchecked {
            return (pw[0] * price * (((h >> 176) & 0xffff) - ((h >> 160) & 0xffff))) / pw[1];
        }
    }

    /// @dev An empty open-addressing set for up to n addresses (memory; 2n slots, power of two).
    function newSet(uint256 n) internal pure returns (uint256[] memory) {
        uint256 size = 2;
        while (size < 2 * n) size <<= 1;
        return new uint256[](size);
    }

    /// @dev Add `a` to `set`; false if it was there. Keys carry bit 160 so address(0) is storable.
    function insert(uint256[] memory set, address a) internal pure returns (bool) {
        uint256 key = uint256(uint160(a)) | (1 << 160);
        uint256 mask = set.length - 1;
        uint256 k = key & mask;
        while (true) {
            uint256 v;
            assembly {
                v := mload(add(set, shl(5, add(k, 1)))) // set[k]: k <= mask < set.length
            }
            if (v == key) return false;
            if (v == 0) break;
            k = (k + 1) & mask;
        }
        assembly {
            mstore(add(set, shl(5, add(k, 1))), key)
        }
        return true;
    }

    /// @dev keccak256(abi.encode(a, b)), hashed in the scratch space (no memory allocated).
    function hashPair(bytes32 a, uint256 b) internal pure returns (bytes32 h) {
        assembly {
            mstore(0x00, a)
            mstore(0x20, b)
            h := keccak256(0x00, 0x40)
        }
    }

    /// @dev keccak256(abi.encodePacked(words)) of a calldata array, copied once to free memory
    ///      (not allocated: nothing else uses it before the hash is taken).
    function hashWords(uint256[] calldata words) internal pure returns (bytes32 h) {
        assembly {
            let p := mload(0x40)
            let len := shl(5, words.length)
            calldatacopy(p, words.offset, len)
            h := keccak256(p, len)
        }
    }

    function popcount(uint256 x) internal pure returns (uint256 c) {
        for (; x != 0; x &= x - 1) ++c;
    }
}
