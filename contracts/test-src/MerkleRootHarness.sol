// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SortedMerkleRoot} from "../src/SortedMerkleRoot.sol";

/// @notice Test only: Settlement's SortedMerkleRoot beside OpenZeppelin's MerkleProof on the same calldata proof.
contract MerkleRootHarness {
    function ours(bytes32[] calldata proof, bytes32 leaf) external pure returns (bytes32) {
        return SortedMerkleRoot.ofCalldata(proof, leaf);
    }

    function openZeppelin(bytes32[] calldata proof, bytes32 leaf) external pure returns (bytes32) {
        return MerkleProof.processProofCalldata(proof, leaf);
    }
}
