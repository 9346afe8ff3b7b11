// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice Test-only hostile token: on every transfer out of `victim` it calls `victim` again with `payload`
/// (e.g. a second claim) and records how that call ended, so a test sees the reentrancy guard's answer.
contract ReentrantToken is ERC20 {
    address public victim;
    bytes public payload;
    bool public attempted;
    bool public reentrySucceeded;
    bytes public reentryError;

    constructor(address holder, uint256 supply) ERC20("hostile", "HOST") {
        _mint(holder, supply);
    }

    function arm(address victim_, bytes calldata payload_) external {
        victim = victim_;
        payload = payload_;
        attempted = false;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (from == victim && victim != address(0) && !attempted) {
            attempted = true;
            (bool ok, bytes memory ret) = victim.call(payload);
            reentrySucceeded = ok;
            reentryError = ret;
        }
    }
}
