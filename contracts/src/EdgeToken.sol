// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice The reward token: trainers deposit it into the escrow, nodes stake it and are paid in it.
/// A fixed supply minted once to `holder`; no owner, no mint afterwards.
contract EdgeToken is ERC20 {
    constructor(address holder, uint256 supply) ERC20("edgeshard", "EDGE") {
        _mint(holder, supply);
    }
}
