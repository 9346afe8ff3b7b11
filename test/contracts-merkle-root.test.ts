// Settlement's SortedMerkleRoot (an assembly loop, for gas) must compute exactly what OpenZeppelin's
// MerkleProof.processProofCalldata does: compared on a real EVM on every proof of trees built by protocol/epoch.ts
// (the settler's own code) and on random proofs, including siblings equal to the running hash.
import { ContractFactory, getAddress, hexlify, randomBytes, type BaseContract } from 'ethers';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadArtifacts } from '../contracts/build.ts';
import { startEmbeddedChain, type EmbeddedChain } from '../contracts/chain.ts';
import { rewardTree, type Leaf } from '../protocol/epoch.ts';

type Harness = BaseContract & {
  ours(proof: string[], leaf: string): Promise<string>;
  openZeppelin(proof: string[], leaf: string): Promise<string>;
};

let chain: EmbeddedChain;
let harness: Harness;
beforeAll(async () => {
  chain = await startEmbeddedChain({ accounts: 1 });
  const art = loadArtifacts().MerkleRootHarness!;
  const c = await new ContractFactory(art.abi as never, art.bytecode, chain.wallets[0]).deploy();
  await c.waitForDeployment();
  harness = c as unknown as Harness;
}, 120_000);

describe('SortedMerkleRoot', () => {
  it('gives the tree’s root for every leaf of epoch trees of 1, 2, 3, 37 and 300 nodes, as OpenZeppelin does', async () => {
    for (const n of [1, 2, 3, 37, 300]) {
      const leaves: Leaf[] = Array.from({ length: n }, (_, i) => ['20833', getAddress(hexlify(randomBytes(20))).toLowerCase(), String(BigInt(i) * 10n ** 15n)]);
      const tree = rewardTree(leaves);
      for (const [i, leaf] of tree.entries()) {
        const proof = tree.getProof(i);
        const hash = tree.leafHash(leaf);
        const [ours, oz] = await Promise.all([harness.ours(proof, hash), harness.openZeppelin(proof, hash)]);
        expect([ours, n]).toEqual([tree.root, n]);
        expect(oz).toBe(ours);
      }
    }
  }, 120_000);

  it('agrees with OpenZeppelin on random proofs, siblings equal to the running hash, zero and all-ones words', async () => {
    const zero = '0x' + '00'.repeat(32);
    const ones = '0x' + 'ff'.repeat(32);
    for (let k = 0; k < 150; k++) {
      const leaf = k % 10 === 0 ? zero : k % 10 === 1 ? ones : hexlify(randomBytes(32));
      const proof = Array.from({ length: k % 21 }, (_, j) => (j % 7 === 3 ? zero : j % 7 === 5 ? ones : hexlify(randomBytes(32))));
      if (proof.length > 0 && k % 3 === 0) proof[0] = leaf; // sibling == running hash: both orders hash the same
      const [ours, oz] = await Promise.all([harness.ours(proof, leaf), harness.openZeppelin(proof, leaf)]);
      expect(ours).toBe(oz);
      if (proof.length === 0) expect(ours).toBe(leaf);
    }
  }, 120_000);
});
