// The contract artifacts are reproducible from the sources: a fresh solc-js compile gives the cached bytecode byte
// for byte, and any change to a source changes the cache key (so a stale artifact is never used).
import { describe, expect, it } from 'vitest';
import { compileContracts, contractSources, loadArtifacts, sourceKey } from '../contracts/build.ts';

describe('contract build', () => {
  it('recompiling the sources reproduces the artifacts byte for byte', () => {
    const cached = loadArtifacts();
    const fresh = compileContracts();
    expect(Object.keys(fresh).sort()).toEqual(['BitmapDistributor', 'EdgeToken', 'Escrow', 'FalseReturnToken', 'IClaimWords', 'MerkleRootHarness', 'NodeRegistry', 'ReentrantToken', 'Settlement', 'SortedMerkleRoot']);
    for (const [name, artifact] of Object.entries(fresh)) {
      expect(artifact.bytecode, name).toBe(cached[name]!.bytecode);
      expect(JSON.stringify(artifact.abi), name).toBe(JSON.stringify(cached[name]!.abi));
    }
  }, 120_000);

  it('a one-character change to a source changes the cache key', () => {
    const sources = contractSources();
    const changed = { ...sources, 'contracts/src/Settlement.sol': sources['contracts/src/Settlement.sol'] + ' ' };
    expect(sourceKey(changed)).not.toBe(sourceKey(sources));
    expect(sourceKey({ ...sources })).toBe(sourceKey(sources));
  });
});
