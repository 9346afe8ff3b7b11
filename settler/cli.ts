import type { Command } from '../protocol/cli/command.ts';
import { stopSignal } from '../protocol/cli/signals.ts';
import { intSetting } from '../protocol/cli/options.ts';
import { startNamingOptions } from '../protocol/cli/start-errors.ts';
import { createLogger } from '../protocol/log.ts';
import { SETTLER_OPTIONS, settlerConfigFromSettings } from './config.ts';
import { startSettler } from './server.ts';
import { join } from 'node:path';
import { connectChainLazily } from '../contracts/cli.ts';
import { createRootPoster } from '../contracts/root-poster.ts';
import { RootPostRetrier } from './root-post-retry.ts';
import { chainReaderLazily, checkChainId, WrongChainError } from '../contracts/connect.ts';
import { readContractsFile } from '../contracts/handles.ts';
import { settlementDomain } from '../protocol/challenge-evidence.ts';

/** How long the start waits for the chain to say its id before it starts without it (the check is for a wrong chain). */
const CHAIN_CHECK_MS = 5_000;

export const settlerCommand: Command = {
  spec: {
    name: 'settler',
    usage: 'edgeshard settler --gateway-keys B64[,B64] [--dir DIR] [--port 8700] [--epoch-seconds 86400] [--claim-window 3600] [--post-roots --chain-key-file KEY [--no-slash]] [--watch-chain] [--rpc URL] [--contracts FILE]',
    summary:
      "Runs the settler: nodes POST their receipts for an epoch to /v1/claims (signed by the node key), gateways POST their signed records to /v1/gateway-records; " +
      "each accepted submission is appended and synced to the open epoch's files before it is acknowledged. When an epoch's claim window has passed " +
      'it settles it into content-addressed files under <dir>/epochs/<epoch>/ (manifest.json with the Merkle root and total), served at /v1/epochs/<epoch>/<file>. ' +
      'Check a payout with `edgeshard rewards verify`. Prometheus at /metrics; with --watch-chain also the contracts\' events (edgeshard_chain_*, the chain dashboard).',
    options: SETTLER_OPTIONS,
  },
  async run(settings) {
    const config = settlerConfigFromSettings(settings);
    const logger = createLogger(config.logLevel, 'settler');
    // With --post-roots, every settled epoch's root goes on chain; a post the chain did not answer is tried again on
    // a doubling schedule (settler/root-post-retry.ts), and the next start posts whatever is still missing.
    // Made without a call: the settler takes claims and records while its RPC endpoint is down (checked below).
    const chain = settings['post-roots'] === true ? await connectChainLazily(settings, 'chain-key-file') : null;
    const poster = chain
      ? new RootPostRetrier(createRootPoster(chain.contracts), {
          onOutcome(r, attempt, retryInMs) {
            if ('posted' in r) console.log(`epoch ${r.epoch}: root ${r.posted.root} posted on chain (total ${r.posted.total}, claimable from ${new Date(Number(r.posted.challengeEnds) * 1000).toISOString()})${attempt > 1 ? ` at attempt ${attempt}` : ''}`);
            else if ('failed' in r && retryInMs !== undefined) logger.error({ epoch: r.epoch, err: r.failed, attempt, retryInMs }, `posting the root on chain failed; trying again in ${Math.round(retryInMs / 1000)} s`);
            else if ('failed' in r) logger.error({ epoch: r.epoch, err: r.failed }, 'posting the root on chain failed; it is tried again when the settler restarts, or run `edgeshard rewards post`');
            else logger.info({ epoch: r.epoch, reason: r.skipped }, 'root not posted');
          },
        })
      : null;
    // With --watch-chain, a read-only connection whose events feed the edgeshard_chain_* metrics.
    const watchPollSeconds = intSetting(settings, 'chain-poll', 1, 86_400);
    const confirmations = intSetting(settings, 'chain-confirmations', 0, 10_000);
    const watchChain = settings['watch-chain'] === true;
    // The contracts file is read once: the root poster's connection holds it, the watcher and the slasher reuse it.
    const contractsFile = chain?.file ?? (watchChain ? await readContractsFile(String(settings.contracts)) : null);
    const reader = watchChain && contractsFile ? chainReaderLazily(String(settings.rpc), contractsFile) : null;
    // Another chain than the contracts file's is a mistake to stop on; a chain that does not answer yet is an outage
    // the settler outlives: roots are posted, evidence submitted and events read once it answers.
    const checkChain = chain ? chain.checkChain : reader && contractsFile ? (timeoutMs: number) => checkChainId(reader, String(settings.rpc), contractsFile, timeoutMs) : null;
    let chainAnswered = true;
    try {
      // A shorter bound than a command's: the check is for a wrong chain, and a silent one must not hold the start.
      await checkChain?.(CHAIN_CHECK_MS);
    } catch (err) {
      if (err instanceof WrongChainError) {
        chain?.close();
        reader?.destroy();
        throw err;
      }
      chainAnswered = false;
      logger.error({ err: (err as Error).message }, 'the chain does not answer: the settler starts anyway; roots are posted, slashing evidence submitted and events read once it does');
    }
    const chainWatch = reader && contractsFile ? { provider: reader, file: contractsFile, pollMs: watchPollSeconds * 1000, confirmations } : undefined;
    const postRoot = async (epochDir: string): Promise<void> => void (await poster!.post(epochDir));
    // With a chain connection, gateways' slashing evidence is submitted once a quorum signed it (unless --no-slash).
    // The slasher does not wait again for a chain that just did not answer: it reads the quorum at the first evidence.
    const slash = chain && settings['no-slash'] !== true ? { settlement: chain.contracts.settlement, domain: settlementDomain(chain.file.chainId, chain.file.settlement), ...(chainAnswered ? {} : { openWaitMs: 0 }) } : undefined;
    const s = await startNamingOptions(
      () => startSettler({ ...config, logger, ...(poster ? { onSettled: (_epoch: number, dir: string) => postRoot(dir) } : {}), ...(chainWatch ? { chainWatch } : {}), ...(slash ? { slash } : {}) }),
      { flag: '--port', value: config.port, host: config.host },
      [{ flag: '--dir', path: config.dir }],
    );
    const st = s.settler.status();
    console.log(
      [
        `settler ${st.id} on ${s.url}, data in ${config.dir}`,
        `  epoch ${st.currentEpoch} (${config.epochSeconds} s epochs, claims accepted ${config.claimWindowSeconds} s past an epoch's end); trusted gateway keys ${Object.keys(config.gateways).join(', ')}`,
        `  open epochs: ${st.open.map((o) => `${o.epoch} (${o.claims} claims)`).join(', ') || 'none'}; settled: ${st.settled.length}`,
      ].join('\n'),
    );
    if (chain) console.log(`  posting roots on chain as ${chain.address} (settlement ${chain.file.settlement})`);
    if (s.slasher) console.log(`  submitting slashing evidence once ${s.slasher.quorum ?? "the contract's quorum of"} gateway key(s) signed it (--no-slash to stop); done so far: ${s.slasher.submitted.size}`);
    if (chainWatch) console.log(`  watching the contracts' events at ${String(settings.rpc)} from block ${chainWatch.file.deployBlock} (or where ${join(config.dir, 'chain-watch.json')} left off) every ${watchPollSeconds} s: edgeshard_chain_* at ${s.url}/metrics`);
    // Roots of epochs settled before this start go on chain in the background, one after the other (the poster skips
    // those already there): a chain that does not answer holds up neither the lines above nor the stop below.
    let stopping = false;
    if (poster) {
      void (async () => {
        for (const e of st.settled) {
          if (stopping) break;
          await postRoot(join(config.dir, 'epochs', String(e.epoch)));
        }
      })();
    }
    await stopSignal();
    stopping = true;
    poster?.close();
    await s.close();
    chain?.close();
    reader?.destroy();
    return 0;
  },
};
