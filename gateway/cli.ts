import type { Command } from '../protocol/cli/command.ts';
import { stopSignal } from '../protocol/cli/signals.ts';
import { startNamingOptions } from '../protocol/cli/start-errors.ts';
import { createLogger } from '../protocol/log.ts';
import { GATEWAY_OPTIONS, gatewayConfigFromSettings } from './config.ts';
import { startGateway } from './server.ts';

export const gatewayCommand: Command = {
  spec: {
    name: 'gateway',
    usage: 'edgeshard gateway --origin URL --dataset NAME[,NAME] [--port 8443] [--fallback redirect|proxy|off] [--settler URL] [--eth-key-file FILE --contracts FILE]',
    summary:
      'Runs a gateway: loads dataset manifests from the origin, registers edge nodes over WebSocket (/v1/nodes/connect), ' +
      'and redirects trainers to the nearest healthy node likely to hold each shard, with a signed ticket. ' +
      'GET /d/<dataset>/<path> redirects; GET /v1/route?dataset=&shard= returns a ranked list; /v1/nodes shows node state; ' +
      '/metrics is Prometheus. Run several replicas side by side: nodes connect to each (--gateway a,b) and they share the ticket key file.',
    options: GATEWAY_OPTIONS,
  },
  async run(settings) {
    const config = gatewayConfigFromSettings(settings);
    const logger = createLogger(config.logLevel, 'gateway');
    const gw = await startNamingOptions(() => startGateway(config, { logger }), { flag: '--port', value: config.port, host: config.host }, [
      { flag: '--ticket-key', path: config.ticketKeyFile },
      { flag: '--record-spool', path: config.recordSpool },
      { flag: '--eth-key-file', path: config.ethKeyFile ?? null },
    ]);
    console.log(`gateway on ${gw.url}, datasets ${config.datasets.join(', ')}, ticket key ${gw.ticketKey.keyId} (public ${gw.ticketKey.publicKeyB64})`);
    if (gw.ethAddress) console.log(`signing slashing evidence as ${gw.ethAddress}: the Settlement admin must grant this address GATEWAY_ROLE`);
    for (const w of gw.datasets.waiting) {
      console.log(`waiting for the origin: could not read ${w.url} (${w.lastError}); retrying with backoff (see /healthz)`);
    }
    await stopSignal();
    await gw.close();
    return 0;
  },
};
