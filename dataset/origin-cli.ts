import type { Command } from '../protocol/cli/command.ts';
import { stopSignal } from '../protocol/cli/signals.ts';
import { UsageError, intSetting, stringSetting } from '../protocol/cli/options.ts';
import { startOrigin } from './origin-server.ts';

export const originCommand: Command = {
  spec: {
    name: 'origin',
    usage: 'edgeshard origin DIR [--port 8000] [--host 127.0.0.1]',
    summary: 'Serves a dataset directory over HTTP (GET/HEAD) so edge nodes can pull from it. For demos and tests; production origins are S3, nginx or any HTTP server.',
    positionals: true,
    options: [
      { name: 'port', type: 'string', default: '8000', description: 'TCP port' },
      { name: 'host', type: 'string', default: '127.0.0.1', description: 'address to listen on' },
    ],
  },
  async run(settings, positionals) {
    const [dir] = positionals;
    if (!dir) throw new UsageError('expected the dataset directory\nusage: ' + this.spec.usage);
    const origin = await startOrigin(dir, intSetting(settings, 'port', 0, 65535), stringSetting(settings, 'host'));
    console.log(`origin serving ${dir} at ${origin.url}`);
    await stopSignal();
    await origin.close();
    return 0;
  },
};
