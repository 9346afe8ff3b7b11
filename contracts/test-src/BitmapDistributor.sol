// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @notice Benchmark peer only: the design of Uniswap's MerkleDistributor (one root, leaves
/// keccak256(abi.encodePacked(index, account, amount)), a claimed bitmap by index, a plain transfer, no reentrancy
/// guard, no epochs, no dispute), written here for Solidity 0.8.30 so that its claim gas is measured in the same run.
contract BitmapDistributor {
    IERC20 public immutable token;
    bytes32 public immutable merkleRoot;
    mapping(uint256 => uint256) private claimedBitMap;

    constructor(IERC20 token_, bytes32 merkleRoot_) {
        token = token_;
        merkleRoot = merkleRoot_;
    }

    function claim(uint256 index, address account, uint256 amount, bytes32[] calldata merkleProof) external {
        uint256 word = index / 256;
        uint256 bit = 1 << (index % 256);
        require(claimedBitMap[word] & bit == 0, "already claimed");
        bytes32 node = keccak256(abi.encodePacked(index, account, amount));
        require(MerkleProof.verifyCalldata(merkleProof, merkleRoot, node), "invalid proof");
        claimedBitMap[word] |= bit;
        require(token.transfer(account, amount), "transfer failed");
    }
}
