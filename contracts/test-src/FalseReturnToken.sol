// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice Test-only faulty token: while `mode` says so, `transfer` moves nothing and, instead of reverting, returns
/// false (mode 1) or returns no data at all (mode 2), as some deployed ERC-20s do. Mode 0 is a plain ERC20.
contract FalseReturnToken is ERC20 {
    uint8 public mode;

    constructor(address holder, uint256 supply) ERC20("false-returning", "FALSE") {
        _mint(holder, supply);
    }

    function setMode(uint8 mode_) external {
        mode = mode_;
    }

    function transfer(address to, uint256 value) public override returns (bool) {
        if (mode == 1) return false;
        if (mode == 2) {
            assembly {
                return(0, 0)
            }
        }
        return super.transfer(to, value);
    }
}
