// Part of protocol/cli/, below every part: each part's cli.ts imports it, so imports point down.
// One way to read settings for every subcommand. Precedence, highest first:
//   1. command-line flag        --cache-size 50GB
//   2. environment variable     EDGESHARD_NODE_CACHE_SIZE=50GB   (EDGESHARD_<COMMAND>_<OPTION>)
//   3. config file (JSON)       --config node.json  {"cache-size": "50GB"}  (or EDGESHARD_NODE_CONFIG)
//   4. the built-in default
// Environment variables carry the command's name, so one exported for `fetch` (EDGESHARD_FETCH_OUT) cannot change
// what `sim report` does: each command reads only its own.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { closest, distance } from 'fastest-levenshtein';
import { parseDuration, parseRate, parseSize } from '../units.ts';

export interface OptionSpec {
  /** Flag name without dashes, e.g. "cache-size". Its env var for `edgeshard node` is EDGESHARD_NODE_CACHE_SIZE. */
  name: string;
  type: 'string' | 'boolean';
  default?: string | boolean;
  description: string;
  short?: string;
}

export interface CommandSpec {
  name: string;
  usage: string;
  summary: string;
  options: OptionSpec[];
  /** Whether positional arguments are allowed. */
  positionals?: boolean;
}

export class UsageError extends Error {}

export type Settings = Record<string, string | boolean | undefined>;

/** The environment variable for `option` of `command`: EDGESHARD_<COMMAND>_<OPTION>, e.g. EDGESHARD_SIM_REPORT_OUT. */
export function envName(command: string, option: string): string {
  return `EDGESHARD_${command}_${option}`.replace(/[^A-Za-z0-9]+/g, '_').toUpperCase();
}

/** The spelling before environment variables were per command: still recognised, to say what replaced it. */
function unscopedEnvName(option: string): string {
  return `EDGESHARD_${option}`.replace(/[^A-Za-z0-9]+/g, '_').toUpperCase();
}

/** " (did you mean --cache-size?)" when a known option is a typo away from what was typed, else "". */
export function didYouMean(typed: string, known: string[]): string {
  if (known.length === 0) return '';
  const best = closest(typed, known);
  const close = distance(typed, best) <= Math.max(2, Math.floor(best.length / 3)) || best.startsWith(typed) || typed.startsWith(best);
  return close ? ` (did you mean --${best}?)` : '';
}

/** node:util's parseArgs errors, as one line that names the option and what to do. */
function usageErrorFrom(err: NodeJS.ErrnoException, spec: CommandSpec, all: OptionSpec[]): UsageError {
  const more = `run "edgeshard ${spec.name} --help" for the options`;
  const quoted = /'(-[^' ]*)/.exec(err.message)?.[1] ?? '';
  const name = quoted.replace(/^-+/, '').split('=')[0]!;
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    return new UsageError(`unknown option ${quoted.startsWith('--') ? `--${name}` : quoted}${didYouMean(name, all.map((o) => o.name))}; ${more}`);
  }
  if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    const option = all.find((o) => o.name === name || o.short === name);
    if (option?.type === 'boolean') return new UsageError(`--${option.name} is a switch and takes no value; ${more}`);
    if (option) return new UsageError(`--${option.name} needs a value; ${more}`);
  }
  return new UsageError(`${err.message.replace(/'/g, '"')}; ${more}`);
}

const CONFIG_OPTION: OptionSpec = { name: 'config', type: 'string', description: 'JSON file with settings (keys are flag names)' };
const HELP_OPTION: OptionSpec = { name: 'help', short: 'h', type: 'boolean', description: 'show this help' };

export function helpText(spec: CommandSpec): string {
  const all = [...spec.options, CONFIG_OPTION, HELP_OPTION];
  const width = Math.max(...all.map((o) => o.name.length + (o.type === 'string' ? 6 : 0))) + 4;
  const lines = all.map((o) => {
    const flag = `--${o.name}${o.type === 'string' ? ' VALUE' : ''}`;
    const def = o.default !== undefined && o.default !== false ? ` (default: ${String(o.default)})` : '';
    return `  ${flag.padEnd(width)}${o.description}${def}`;
  });
  return [
    `usage: ${spec.usage}`,
    '',
    spec.summary,
    '',
    'options:',
    ...lines,
    '',
    `Every option can also be set as an environment variable named for this command (${envName(spec.name, 'x').slice(0, -1)}<OPTION>, ` +
      `e.g. ${envName(spec.name, spec.options[0]?.name ?? 'config')}) or in the --config JSON file.`,
    'Precedence: flag, then environment, then config file, then default.',
  ].join('\n');
}

export function parseCommand(
  spec: CommandSpec,
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): { settings: Settings; positionals: string[]; help: boolean; warnings: string[] } {
  const all = [...spec.options, CONFIG_OPTION, HELP_OPTION];
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: Object.fromEntries(all.map((o) => [o.name, { type: o.type, ...(o.short ? { short: o.short } : {}) }])),
    });
  } catch (err) {
    throw usageErrorFrom(err as NodeJS.ErrnoException, spec, all);
  }
  if (parsed.values.help) return { settings: {}, positionals: [], help: true, warnings: [] };
  if (!spec.positionals && parsed.positionals.length > 0) {
    throw new UsageError(`unexpected argument "${parsed.positionals[0]}"\nusage: ${spec.usage}`);
  }

  const configPath = (parsed.values.config as string | undefined) ?? env[envName(spec.name, 'config')];
  let fileSettings: Record<string, unknown> = {};
  if (configPath) {
    try {
      fileSettings = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new UsageError(`config file ${configPath}: ${(err as Error).message}`);
    }
    if (typeof fileSettings !== 'object' || fileSettings === null || Array.isArray(fileSettings)) {
      throw new UsageError(`config file ${configPath}: expected a JSON object of flag names to values`);
    }
    for (const key of Object.keys(fileSettings)) {
      if (!spec.options.some((o) => o.name === key)) {
        throw new UsageError(`config file ${configPath}: unknown setting "${key}" for "edgeshard ${spec.name}"${didYouMean(key, spec.options.map((o) => o.name)).replace('--', '"').replace('?', '"?')}`);
      }
    }
  }

  const settings: Settings = {};
  const warnings: string[] = [];
  for (const o of [...spec.options, CONFIG_OPTION]) {
    const old = unscopedEnvName(o.name);
    if (env[old] !== undefined && env[envName(spec.name, o.name)] === undefined) {
      warnings.push(`ignoring ${old}: environment variables are per command now; for "edgeshard ${spec.name}" set ${envName(spec.name, o.name)}`);
    }
  }
  for (const o of spec.options) {
    const fromFlag = parsed.values[o.name] as string | boolean | undefined;
    const fromEnv = env[envName(spec.name, o.name)];
    const fromFile = fileSettings[o.name];
    let value: string | boolean | undefined;
    if (fromFlag !== undefined) value = fromFlag;
    else if (fromEnv !== undefined) value = o.type === 'boolean' ? /^(1|true|yes|on)$/i.test(fromEnv) : fromEnv;
    else if (fromFile !== undefined) value = o.type === 'boolean' ? Boolean(fromFile) : String(fromFile);
    else value = o.default;
    settings[o.name] = value;
  }
  return { settings, positionals: parsed.positionals, help: false, warnings };
}

/** Reads a numeric setting, with an error that names the option. */
export function intSetting(settings: Settings, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const raw = settings[name];
  const n = Number(raw);
  if (typeof raw !== 'string' || !Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} "${String(raw)}": expected an integer from ${min} to ${max}`);
  }
  return n;
}

export function stringSetting(settings: Settings, name: string): string | undefined {
  const v = settings[name];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** `--lat` and `--lon` together as a point, or null when neither is set. */
export function locationSetting(settings: Settings): { lat: number; lon: number } | null {
  const lat = stringSetting(settings, 'lat');
  const lon = stringSetting(settings, 'lon');
  if (lat === undefined && lon === undefined) return null;
  const la = Number(lat);
  const lo = Number(lon);
  if (lat === undefined || lon === undefined || !(la >= -90 && la <= 90) || !(lo >= -180 && lo <= 180)) {
    throw new UsageError('--lat and --lon go together: latitude -90..90 and longitude -180..180 in degrees');
  }
  return { lat: la, lon: lo };
}

/**
 * `raw` as an http(s) URL, or a usage error that names what it is (e.g. `--settler`), the value, and an example:
 * the one check behind every option that names a server to talk to.
 */
export function httpUrl(what: string, raw: string, example: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`${what} "${raw}": expected an http(s) URL such as ${example}; this is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`${what} "${raw}": expected an http(s) URL such as ${example}; ${url.protocol} URLs are not supported`);
  return url;
}

/** A unit parser's error (it names the option and the units) as a usage error. */
function unitSetting(settings: Settings, name: string, fallback: string | undefined, parse: (text: string, what: string) => number): number {
  try {
    return parse(String(settings[name] ?? fallback), `--${name}`);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** A size setting in bytes ("512MiB", "50GB"); `fallback` when the settings lack it (no spec default applied). */
export function sizeSetting(settings: Settings, name: string, fallback?: string): number {
  return unitSetting(settings, name, fallback, parseSize);
}

/** A rate setting in bytes per second ("200Mbps", "50MB/s"; 0 = unlimited). */
export function rateSetting(settings: Settings, name: string, fallback?: string): number {
  return unitSetting(settings, name, fallback, parseRate);
}

/** A duration setting in ms ("30s", "500ms", "2m"). */
export function durationSetting(settings: Settings, name: string, fallback?: string): number {
  return unitSetting(settings, name, fallback, parseDuration);
}
