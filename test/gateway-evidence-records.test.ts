// The `evidence` gateway record and the gateway's Ethereum key: only slashable failures are signed, the record's
// EIP-712 signature is checked against its signer, the key file is created 0600 and refused when others can read it,
// and --eth-key-file goes with --contracts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { chmod, readFile, stat } from 'node:fs/promises';
import { Wallet } from 'ethers';
import { generateTicketKey } from '../protocol/tickets.ts';
import { checkGatewayRecord, recordProblem, signGatewayRecord, type ChallengeRecord, type EvidenceRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import { evidenceDigest, evidenceOfRecord, evidenceRecordFields, evidenceSignatureProblem, failedChallengeEvidence, settlementDomain } from '../protocol/challenge-evidence.ts';
import { loadOrCreateGatewayEthKey } from '../protocol/identity.ts';
import { GATEWAY_OPTIONS, gatewayConfigFromSettings } from '../gateway/config.ts';
import { sortedSignatures } from '../settler/slasher.ts';
import { tempDir } from './helpers/net.ts';

const key = generateTicketKey();
const trusted = new Map([[key.keyId, key.publicKey]]);
const domain = settlementDomain(31337, '0x' + '12'.repeat(20));
const challenge = (failure: ChallengeRecord['failure']) =>
  signGatewayRecord(
    { type: 'challenge', gateway: 'gw', epoch: 7, at: 1, node: '0x' + 'ab'.repeat(20), shard: 'cd'.repeat(32), offset: 65_536, length: 131_072, deadlineMs: 900, elapsedMs: 900, bytesPerSecond: 0, ok: false, failure },
    key,
  ) as GatewayRecord & ChallengeRecord;

describe('evidence records', () => {
  const wallet = new Wallet(Wallet.createRandom().privateKey);

  it('are made for wrong bytes and timeouts only, and carry a signature the settler checks against the signer', async () => {
    for (const failure of ['not-held', 'unreachable', 'bad-status'] as const) expect(await evidenceRecordFields(challenge(failure), wallet, domain, 2)).toBeNull();
    for (const failure of ['wrong-bytes', 'timeout'] as const) {
      const c = challenge(failure);
      const r = signGatewayRecord((await evidenceRecordFields(c, wallet, domain, 2))!, key) as GatewayRecord & EvidenceRecord;
      expect(checkGatewayRecord(r, trusted, 7).ok).toBe(true);
      expect(r).toMatchObject({ type: 'evidence', challenge: c.id, signer: wallet.address.toLowerCase(), failure });
      // The record's typed data is the challenge's evidence, digest for digest.
      expect(evidenceOfRecord(r)).toEqual(failedChallengeEvidence(c));
      expect(evidenceDigest(domain, evidenceOfRecord(r))).toBe(evidenceDigest(domain, failedChallengeEvidence(c)!));
      expect(evidenceSignatureProblem(domain, r)).toBeNull();
      // Another node, or another contract, and the signature is no longer the signer's.
      expect(evidenceSignatureProblem(domain, { ...r, node: '0x' + 'ef'.repeat(20) })).toMatch(/not the record's signer/);
      expect(evidenceSignatureProblem(settlementDomain(31337, '0x' + '34'.repeat(20)), r)).toMatch(/not the record's signer/);
      // A signature that is no signature at all is named as such, not as another signer's.
      expect(evidenceSignatureProblem(domain, { ...r, ethSignature: '0x1234' })).toMatch(/^ethSignature does not parse \(/);
    }
  });

  it('refuse a failure that does not slash, and a malformed signer or signature', async () => {
    const fields = (await evidenceRecordFields(challenge('wrong-bytes'), wallet, domain, 2))! as Omit<EvidenceRecord, 'id' | 'keyId'>;
    const body = { ...fields, id: '00'.repeat(16), keyId: key.keyId };
    expect(recordProblem(body)).toBeNull();
    expect(recordProblem({ ...body, failure: 'not-held' })).toMatch(/only slashable failures/);
    expect(recordProblem({ ...body, signer: wallet.address })).toMatch(/lowercase address/); // checksummed: not canonical
    expect(recordProblem({ ...body, ethSignature: body.ethSignature.slice(0, -2) })).toMatch(/65-byte/);
    expect(() => signGatewayRecord({ ...fields, failure: 'unreachable' as 'timeout' }, key)).toThrow(/only slashable failures/);
  });

  it('sort signatures by signer address, as the contract requires', () => {
    const sigs = new Map([
      ['0x' + 'ff'.repeat(20), 'c'],
      ['0x' + '0a'.repeat(20), 'a'],
      ['0x' + 'a0'.repeat(20), 'b'],
    ]);
    expect(sortedSignatures(sigs)).toEqual(['a', 'b', 'c']);
  });
});

describe("the gateway's Ethereum key", () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  beforeAll(async () => (tmp = await tempDir()));
  afterAll(async () => tmp?.cleanup());

  it('is created 0600 on first start and read back the same; refused when others can read it', async () => {
    const file = join(tmp.dir, 'keys', 'gateway-eth-key.json');
    const first = await loadOrCreateGatewayEthKey(file);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ address: first.address });
    expect((await loadOrCreateGatewayEthKey(file)).address).toBe(first.address);
    await chmod(file, 0o644);
    await expect(loadOrCreateGatewayEthKey(file)).rejects.toThrow(/gateway Ethereum key .* readable by other users/);
  });

  it('goes with --contracts: one without the other is a usage error', () => {
    const defaults = Object.fromEntries(GATEWAY_OPTIONS.filter((o) => o.default !== undefined).map((o) => [o.name, o.default]));
    const base = { ...defaults, origin: 'http://127.0.0.1:1', dataset: 'd' };
    expect(() => gatewayConfigFromSettings({ ...base, 'eth-key-file': 'k.json' })).toThrow(/--eth-key-file and --contracts go together/);
    expect(() => gatewayConfigFromSettings({ ...base, contracts: 'c.json' })).toThrow(/--contracts needs --eth-key-file/);
    expect(gatewayConfigFromSettings({ ...base, 'eth-key-file': 'k.json', contracts: 'c.json' })).toMatchObject({ ethKeyFile: 'k.json', contractsFile: 'c.json' });
    expect(gatewayConfigFromSettings(base)).toMatchObject({ ethKeyFile: null, contractsFile: null });
  });
});
