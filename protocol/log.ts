// Structured logs: one JSON line per event (pino). Quiet by default: warnings and errors only, so an operator's
// terminal shows problems, and `--log-level info` or `debug` shows every fill, eviction and connection.
import { pino, type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['silent', 'fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;

export function createLogger(level = 'warn', name = 'edgeshard'): Logger {
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new Error(`log level "${level}": use one of ${LOG_LEVELS.join(', ')}`);
  }
  return pino({ name, level, base: { pid: process.pid } });
}

/** For tests and library use: a logger that drops everything. */
export const silentLogger: Logger = pino({ level: 'silent' });
