import type { Command } from '../protocol/cli/command.ts';
import { stopSignal } from '../protocol/cli/signals.ts';
import { startNamingOptions } from '../protocol/cli/start-errors.ts';
import { createLogger } from '../protocol/log.ts';
import { formatBytes } from '../protocol/units.ts';
import { NODE_OPTIONS, nodeConfigFromSettings } from './config.ts';
import { startEdgeNode } from './server.ts';

export const nodeCommand: Command = {
  spec: {
    name: 'node',
    usage: 'edgeshard node --origin URL [--cache-dir DIR] [--cache-size 50GB] [--max-upload 200Mbps] [--port 8080]',
    summary:
      'Runs an edge node: a pull-through cache that fetches shards from the origin, verifies them against their sha256, ' +
      'keeps them on disk (LRU) and in memory, and serves them over HTTP as /shard/<sha256> or /<origin path>. ' +
      'Prometheus metrics at /metrics, liveness at /healthz. SIGTERM drains in-flight responses, then exits.',
    options: NODE_OPTIONS,
  },
  async run(settings) {
    const config = nodeConfigFromSettings(settings);
    const logger = createLogger(config.logLevel, 'edge-node');
    const node = await startNamingOptions(() => startEdgeNode(config, { logger, onRegistered: (gw) => console.log(`registered with gateway ${gw}`) }), { flag: '--port', value: config.port, host: config.host }, [
      { flag: '--cache-dir', path: config.cacheDir },
      { flag: '--key-file', path: config.keyFile },
      { flag: '--receipt-log', path: config.receiptLogFile },
      { flag: '--contracts', path: config.contractsFile },
    ]);
    // What an operator checks first: who the node is, what it kept from its last run, where it reports.
    console.log(
      [
        `edge node ${node.address} on ${node.url} (listening on ${config.host}:${new URL(node.url).port}), origin ${config.originUrl}`,
        `  cache: ${node.disk ? `restored ${node.disk.entryCount} objects, ${formatBytes(node.disk.usedBytes)} of ${formatBytes(config.cacheBytes)} in ${config.cacheDir}` : 'disk tier off (--cache-dir none)'}; memory tier ${formatBytes(config.memoryBytes)}`,
        `  upload cap ${config.maxUploadBytesPerSecond ? `${((config.maxUploadBytesPerSecond * 8) / 1e6).toFixed(0)} Mbit/s` : 'none'}; ` +
          `tickets ${config.open ? 'not required (--open)' : 'required'}; gateways ${config.gateways.length ? `${config.gateways.join(', ')} (registering…)` : 'none'}`,
        `  receipts: ${node.receipts.size} tickets held ${config.receiptLogFile ? `in ${config.receiptLogFile}` : 'in memory only (--receipt-log none)'}; unpaid allowance ${formatBytes(config.unpaidAllowanceBytes)} per keyed ticket; claims to ${config.settlers.length ? config.settlers.join(', ') : 'no settler (--settler URL)'}`,
        `  rewards: ${node.autoClaimer ? `claimed on chain ${config.chainRpc} by ${node.address} every ${config.autoClaimIntervalMs / 1000} s (it pays the gas)` : !config.autoClaim ? 'auto-claim off (--no-auto-claim): claim with `edgeshard rewards claim`' : 'not claimed by the node (needs --settler and --rpc)'}`,
      ].join('\n'),
    );
    await stopSignal();
    console.log('stopping: draining in-flight responses');
    await node.close();
    console.log('stopped');
    return 0;
  },
};
