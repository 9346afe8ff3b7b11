// `edgeshard demo` (what `npm start` runs): the whole network on 127.0.0.1 with the built-in sample dataset and no
// setup, up until Ctrl-C. An origin, a gateway, three edge nodes announced in Paris, New York and Tokyo, on fixed
// ports that grafana/prometheus.yml scrapes; then a trainer near Brussels fetches the dataset through the gateway
// (cold, then warm) and a data loader streams it in a seeded shuffle; then it prints what to try next and waits.
//
// Each run starts clean: the nodes' caches and the trainer's directory are wiped first, so "cold" always means
// cold. `--keep-cache` keeps the caches of the last run, and the first fetch then says "warm".
import { join } from 'node:path';
import { chmod, rm, writeFile } from 'node:fs/promises';
import type { Command } from '../protocol/cli/command.ts';
import { stopSignal } from '../protocol/cli/signals.ts';
import { intSetting, stringSetting, UsageError, type Settings } from '../protocol/cli/options.ts';
import { startNamingOptions } from '../protocol/cli/start-errors.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startOrigin } from '../dataset/origin-server.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { loadOrCreateTicketKey, startGateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { fetchDataset } from '../client/fetch.ts';
import { openDataset } from '../client/loader.ts';
import { formatBytes } from '../protocol/units.ts';
import { DEV_ROLES, startDevChain } from '../contracts/dev-chain.ts';
import { connectContracts } from '../contracts/handles.ts';
import { depositToEscrow } from '../contracts/rewards-chain.ts';
import { registerStake } from '../contracts/stake-chain.ts';
import { managedWallet } from '../contracts/wallet.ts';
import { loadOrCreateNodeKey } from '../protocol/identity.ts';
import { openClientIdentity } from '../client/receipts.ts';
import { settleDemoEpoch, startDemoSettler } from './demo-rewards.ts';
import { TOKEN } from '../contracts/deploy.ts';
import { formatUnits } from 'ethers';

const PLACES = [
  { name: 'Paris', lat: 48.8566, lon: 2.3522 },
  { name: 'New York', lat: 40.7128, lon: -74.006 },
  { name: 'Tokyo', lat: 35.6762, lon: 139.6503 },
];
const TRAINER = { lat: 50.85, lon: 4.35 }; // Brussels

/** The demo's default ports: grafana/prometheus.yml scrapes the gateway and the three nodes on these. */
export const DEMO_PORTS = { origin: 8000, gateway: 8443, node: 8080, chain: 8545 } as const;

/** The line printed once everything is closed; tests wait for it. */
export const SHUTDOWN_LINE = 'demo stopped: nodes, gateway and origin closed';

function port(settings: Settings, name: string): number {
  return intSetting(settings, name, 0, 65535);
}

/** Starts a server with an error that names its port flag, rather than a bare EADDRINUSE. */
function bound<T>(flag: string, value: number, start: () => Promise<T>): Promise<T> {
  return startNamingOptions(start, { flag, value }, []);
}

export const demoCommand: Command = {
  spec: {
    name: 'demo',
    usage: 'edgeshard demo [--dir .edgeshard/demo] [--shards 16] [--gateway-port 8443] [--node-port 8080] [--origin-port 8000] [--chain-port 8545] [--keep-cache]',
    summary:
      'Runs an origin, a gateway and three edge nodes on 127.0.0.1 with the built-in sample dataset, fetches it as a trainer near Brussels ' +
      '(cold, then warm) and streams it through the data-loader library (every shard verified), then keeps the network up until Ctrl-C. ' +
      'The nodes listen on --node-port and the next two ports; port 0 picks free ports. Each run starts with empty caches unless --keep-cache.',
    options: [
      { name: 'dir', type: 'string', default: '.edgeshard/demo', description: 'working directory for the sample data, caches and downloads' },
      { name: 'shards', type: 'string', default: '16', description: 'shards in the sample dataset' },
      { name: 'gateway-port', type: 'string', default: String(DEMO_PORTS.gateway), description: 'gateway port (status page, /d/, /metrics); 0 = any free port' },
      { name: 'node-port', type: 'string', default: String(DEMO_PORTS.node), description: 'first node port; the others take the next two; 0 = any free ports' },
      { name: 'origin-port', type: 'string', default: String(DEMO_PORTS.origin), description: 'origin port; 0 = any free port' },
      { name: 'chain-port', type: 'string', default: String(DEMO_PORTS.chain), description: 'JSON-RPC port of the embedded dev chain; 0 = any free port' },
      { name: 'keep-cache', type: 'boolean', default: false, description: "keep the nodes' caches from the last run (the first fetch is then warm)" },
      { name: 'no-settle', type: 'boolean', default: false, description: "leave the epoch open: skip settling the trainer's receipts, posting the root and the nodes' claims" },
    ],
  },
  async run(settings) {
    // Listen for Ctrl-C from the start, so an interrupt during start-up also shuts down cleanly.
    let stopRequested = false;
    const stop = stopSignal().then(() => {
      stopRequested = true;
    });
    const dir = stringSetting(settings, 'dir') ?? '.edgeshard/demo';
    const ports = { gateway: port(settings, 'gateway-port'), node: port(settings, 'node-port'), origin: port(settings, 'origin-port'), chain: port(settings, 'chain-port') };
    if (ports.node > 65535 - (PLACES.length - 1)) throw new UsageError(`--node-port ${ports.node}: the nodes need it and the next ${PLACES.length - 1} ports; use at most ${65535 - (PLACES.length - 1)}`);
    const keepCache = settings['keep-cache'] === true;
    if (!keepCache) for (let i = 0; i < PLACES.length; i++) await rm(join(dir, `node-${i}`, 'cache'), { recursive: true, force: true });
    // Receipts belong to one run's trainer session and epoch: every run starts with none.
    for (let i = 0; i < PLACES.length; i++) await rm(join(dir, `node-${i}`, 'receipts.log'), { force: true });
    const nodeKeyFile = (i: number) => join(dir, `node-${i}`, 'node-key.json');
    const settle = settings['no-settle'] !== true;

    const { manifest, id } = await writeSampleDataset(join(dir, 'origin', 'sample'), { shards: intSetting(settings, 'shards', 1, 10_000) });
    console.log(`sample dataset: ${manifest.shards.length} shards, ${formatBytes(manifest.totalBytes)}, manifest ${id.slice(0, 16)}…`);

    const closers: (() => Promise<void>)[] = [];
    const stopAll = async (): Promise<void> => {
      for (const close of closers.reverse()) await close().catch(() => {});
    };
    try {
      const origin = await bound('--origin-port', ports.origin, () => startOrigin(join(dir, 'origin'), ports.origin));
      closers.push(() => origin.close());
      // The chain with the contracts deployed, and the trainer's deposit into the escrow that pays the nodes. The
      // trainer fetches with the dev trainer key, so the receipts it signs are paid from that escrow.
      const dev = await bound('--chain-port', ports.chain, () => startDevChain({ out: join(dir, 'chain'), port: ports.chain, challengeWindowSeconds: 60 }));
      closers.push(() => dev.close());
      const trainerWallet = dev.chain.wallets[DEV_ROLES.indexOf('trainer')]!;
      const { balance: deposited } = await depositToEscrow(connectContracts(dev.file, trainerWallet), dev.addresses.trainer, 100n * TOKEN);
      const chain = { dev, deposited };
      const trainerKey = join(dir, 'trainer-key.json');
      await writeFile(trainerKey, JSON.stringify({ address: dev.addresses.trainer, privateKey: dev.chain.keys[DEV_ROLES.indexOf('trainer')] }, null, 2) + '\n', { mode: 0o600 });
      await chmod(trainerKey, 0o600);
      const identity = await openClientIdentity(trainerKey);
      // The settler, before the nodes: they submit their receipts to it and claim on chain what it settles.
      const ticketKeyFile = join(dir, 'gateway-ticket-key.pem');
      const demoSettler = settle ? await startDemoSettler({ dir, dev, gatewayKey: await loadOrCreateTicketKey(ticketKeyFile) }) : null;
      if (demoSettler) closers.push(() => demoSettler.settler.close());
      // The gateway reads the settler's settled epochs for its status page (--rewards-from), but pushes no records
      // there: the demo's payouts stay bytes × rate, which its last lines check.
      const gateway = await bound('--gateway-port', ports.gateway, () =>
        startGateway(
          defaultGatewayConfig({
            originUrl: origin.url, datasets: ['sample'], port: ports.gateway, ticketKeyFile, allowPrivateNodes: true, challengeIntervalMs: 60_000,
            rewardsUrl: demoSettler?.settler.url ?? null, rewardsRefreshMs: 1_000,
            // Membership on chain: the gateway admits the nodes only once they are staked (below), as --rpc does.
            rpcUrl: dev.rpc, contractsFile: dev.contractsPath,
          }),
        ),
      );
      closers.push(() => gateway.close());
      // Each node stakes the registry's minimum from its own key before it serves, as an operator does with
      // `edgeshard stake register`: the dev admin sends it the tokens and the ether for gas (its claims too).
      const admin = dev.chain.wallets[DEV_ROLES.indexOf('admin')]!;
      const minStake = await dev.contracts.registry.minStake();
      const stakes: bigint[] = [];
      for (let i = 0; i < PLACES.length; i++) {
        const key = await loadOrCreateNodeKey(nodeKeyFile(i));
        await (await admin.sendTransaction({ to: key.address, value: 10n ** 18n })).wait();
        await (await dev.contracts.token.transfer(key.address, minStake)).wait();
        stakes.push((await registerStake(connectContracts(dev.file, managedWallet(key.privateKey, dev.chain.provider)), key.address, minStake)).status.stake);
      }
      const nodes: EdgeNode[] = [];
      for (const [i, place] of PLACES.entries()) {
        const nodePort = ports.node === 0 ? 0 : ports.node + i;
        const node = await bound('--node-port', nodePort, () =>
          startEdgeNode(
            defaultNodeConfig({
              originUrl: origin.url,
              port: nodePort,
              open: false,
              gateways: [gateway.url],
              location: { lat: place.lat, lon: place.lon },
              cacheDir: join(dir, `node-${i}`, 'cache'),
              keyFile: nodeKeyFile(i),
              receiptLogFile: join(dir, `node-${i}`, 'receipts.log'),
              // Each node claims its own rewards on the dev chain, checking the settler every second.
              settlers: demoSettler ? [demoSettler.settler.url] : [],
              chainRpc: demoSettler ? dev.rpc : null,
              contractsFile: dev.contractsPath,
              autoClaimIntervalMs: 1_000,
            }),
          ),
        );
        nodes.push(node);
        closers.push(() => node.close());
      }
      const deadline = Date.now() + 15_000;
      while (gateway.registry.healthyCount < PLACES.length || nodes.some((n) => n.manifests.shardCount < manifest.shards.length)) {
        if (stopRequested) return 0;
        if (Date.now() > deadline) throw new Error('nodes did not register with the gateway within 15 s');
        await new Promise((r) => setTimeout(r, 50));
      }
      console.log(`origin   ${origin.url}\ngateway  ${gateway.url}  (admits nodes staked on chain only)`);
      for (const [i, n] of nodes.entries()) console.log(`node     ${n.url}  ${PLACES[i]!.name.padEnd(9)} ${n.address}  stake ${formatUnits(stakes[i]!, 18)} EDGE`);
      console.log(
        `chain    ${dev.rpc}  token ${dev.file.token}, settlement ${dev.file.settlement}\n` +
          `         trainer ${dev.addresses.trainer} deposited 100 EDGE into the escrow (balance ${formatUnits(deposited, 18)} EDGE) and signs receipts for what it verifies`,
      );

      const chainLines = [
        `  npx edgeshard deposit 5 --rpc ${dev.rpc} --contracts ${dev.contractsPath} --key-file ${dev.keyPath('trainer')}`,
        `  npx edgeshard stake status --key-file ${nodeKeyFile(0)} --rpc ${dev.rpc} --contracts ${dev.contractsPath}`,
      ];

      const nameOf = (address: string): string => PLACES[nodes.findIndex((n) => n.address === address || address.startsWith(n.url))]?.name ?? address;
      const out = join(dir, 'trainer');
      const warmAtStart = nodes.some((n) => (n.disk?.usedBytes ?? 0) > 0);
      for (const pass of [warmAtStart ? 'warm: caches kept from the last run' : 'cold', 'warm'] as const) {
        if (stopRequested) break;
        await rm(out, { recursive: true, force: true });
        const originBefore = origin.requests();
        const report = await fetchDataset({ gateway: gateway.url, dataset: 'sample', outDir: out, near: TRAINER, parallel: 4, identity });
        const servedBy = new Map<string, number>();
        for (const r of report.results) for (const s of r.servedBy.slice(-1)) servedBy.set(nameOf(s), (servedBy.get(nameOf(s)) ?? 0) + 1);
        console.log(
          `fetch (${pass}): ${report.downloaded} shards verified, ${report.failed} failed, ${formatBytes(report.bytesFetched)} in ${report.elapsedMs.toFixed(0)} ms; ` +
            `served by ${[...servedBy].map(([k, v]) => `${k} ×${v}`).join(', ')}; origin requests ${origin.requests() - originBefore}`,
        );
        if (report.failed > 0) return 1;
      }

      if (!stopRequested) {
        const ds = await openDataset({ gateway: gateway.url, dataset: 'sample', near: TRAINER });
        let seen = 0;
        const order: string[] = [];
        for await (const { shard } of ds.shards({ order: 'shuffle', seed: 42, prefetch: 4 })) {
          seen++;
          if (order.length < 4) order.push(shard.path.split('/').pop()!);
        }
        await ds.close();
        console.log(`data loader: ${seen} verified shards in seeded-shuffle order (seed 42: ${order.join(', ')}, …)`);
      }

      if (!stopRequested && demoSettler) {
        for (const line of await settleDemoEpoch({ dev: chain.dev, settler: demoSettler, nodes: nodes.map((node, i) => ({ name: PLACES[i]!.name, node, keyFile: nodeKeyFile(i) })), escrowBefore: chain.deposited, trainer: chain.dev.addresses.trainer })) console.log(line);
      }

      if (!stopRequested) {
        // One round of the gateway's active probes, after the counts above (a probe of a cold node is an origin
        // fill): the status page then shows each node's score and why it moved.
        await gateway.prober.probeAll();
        const first = manifest.shards[0]!.path;
        console.log(
          [
            '',
            'The network stays up until Ctrl-C. Try:',
            `  curl -L '${gateway.url}/d/sample/${first}?near=48.85,2.35' -o shard.bin`,
            `  npx edgeshard fetch ${gateway.url} sample --out ./sample-copy`,
            `  status page  ${gateway.url}/`,
            `  metrics      ${gateway.url}/metrics  ${nodes.map((n) => `${n.url}/metrics`).join('  ')}`,
            `  prometheus --config.file=grafana/prometheus.yml   (scrapes these ports when they are the defaults)`,
            ...chainLines,
          ].join('\n'),
        );
        await stop;
      }
      return 0;
    } finally {
      if (stopRequested) console.log('stopping…');
      await stopAll();
      console.log(SHUTDOWN_LINE);
    }
  },
};
