// Options that several commands share (node, gateway, settler): each is declared and read here once, so it takes
// the same values and answers a bad one the same way in every command.
import { LOG_LEVELS } from '../log.ts';
import { UsageError, stringSetting, type OptionSpec, type Settings } from './options.ts';

/** --log-level with the command's default level. */
export function logLevelOption(defaultLevel: (typeof LOG_LEVELS)[number]): OptionSpec {
  return { name: 'log-level', type: 'string', default: defaultLevel, description: `how much to log: ${LOG_LEVELS.join(', ')}` };
}

/** --log-level checked against the levels there are (`fallback` when the settings lack it), or a usage error. */
export function logLevelSetting(settings: Settings, fallback: (typeof LOG_LEVELS)[number]): string {
  const level = stringSetting(settings, 'log-level') ?? fallback;
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new UsageError(`--log-level "${level}": use one of ${LOG_LEVELS.join(', ')}`);
  return level;
}
