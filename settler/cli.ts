import type { Command } from '../protocol/cli/command.ts';
import { stopSignal } from '../protocol/cli/signals.ts';
import { UsageError } from '../protocol/cli/options.ts';
import { describeStartError } from '../protocol/cli/start-errors.ts';
import { createLogger } from '../protocol/log.ts';
import { SETTLER_OPTIONS, settlerConfigFromSettings } from './config.ts';
import { startSettler } from './server.ts';

export const settlerCommand: Command = {
  spec: {
    name: 'settler',
    usage: 'edgeshard settler --gateway-keys B64[,B64] [--dir DIR] [--port 8700] [--epoch-seconds 86400] [--claim-window 3600]',
    summary:
      "Runs the settler: nodes POST their receipts for an epoch to /v1/claims (signed by the node key), gateways POST their signed records to /v1/gateway-records; " +
      "each accepted submission is appended and synced to the open epoch's files before it is acknowledged. When an epoch's claim window has passed " +
      'it settles it into content-addressed files under <dir>/epochs/<epoch>/ (manifest.json with the Merkle root and total), served at /v1/epochs/<epoch>/<file>. ' +
      'Check a payout with `edgeshard rewards verify`. Prometheus at /metrics.',
    options: SETTLER_OPTIONS,
  },
  async run(settings) {
    const config = settlerConfigFromSettings(settings);
    const logger = createLogger(config.logLevel, 'settler');
    let s;
    try {
      s = await startSettler({ ...config, logger });
    } catch (err) {
      const explained = describeStartError(err, { flag: '--port', value: config.port, host: config.host }, [{ flag: '--dir', path: config.dir }]);
      if (explained) throw new UsageError(explained);
      throw err;
    }
    const st = s.settler.status();
    console.log(
      [
        `settler ${st.id} on ${s.url}, data in ${config.dir}`,
        `  epoch ${st.currentEpoch} (${config.epochSeconds} s epochs, claims accepted ${config.claimWindowSeconds} s past an epoch's end); trusted gateway keys ${Object.keys(config.gateways).join(', ')}`,
        `  open epochs: ${st.open.map((o) => `${o.epoch} (${o.claims} claims)`).join(', ') || 'none'}; settled: ${st.settled.length}`,
      ].join('\n'),
    );
    await stopSignal();
    await s.close();
    return 0;
  },
};
