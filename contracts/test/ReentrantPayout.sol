// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @dev A payout address that calls back into the registry (or market) each time it is paid,
///      trying to withdraw again. Used by the Python re-entrancy tests.
contract ReentrantPayout {
    address public target;
    bytes public callback;
    uint256 public calls;
    uint256 public received;
    bool public rejectPayments; // when set, every payment to this contract fails

    function setReject(bool reject) external {
        rejectPayments = reject;
    }

    function arm(address target_, bytes calldata callback_) external {
        target = target_;
        callback = callback_;
    }

    /// @dev Forwarded calls let the test make this contract a requester.
    function forward(address to, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = to.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        return ret;
    }

    receive() external payable {
        require(!rejectPayments, "payments rejected");
        ++calls;
        received += msg.value;
        if (calls < 4 && target != address(0)) {
            (bool ok,) = target.call(callback);
            ok; // the re-entrant attempt is expected to fail or pay nothing
        }
    }
}
