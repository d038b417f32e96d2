/** Plain structured logging to stderr: one line per event, JSON when not on a terminal. */
import type { Log } from '../shared/log';

type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function createLog(component: string, minLevel: Level = 'info'): Log & { debug: Log['info'] } {
  const tty = process.stderr.isTTY;
  const write = (level: Level, msg: string, meta?: Record<string, unknown>) => {
    if (ORDER[level] < ORDER[minLevel]) return;
    const ts = new Date().toISOString();
    if (tty) {
      const extra = meta && Object.keys(meta).length ? ' ' + JSON.stringify(meta) : '';
      process.stderr.write(`${ts} ${level.toUpperCase().padEnd(5)} [${component}] ${msg}${extra}\n`);
    } else {
      process.stderr.write(JSON.stringify({ ts, level, component, msg, ...meta }) + '\n');
    }
  };
  return {
    debug: (m, meta) => write('debug', m, meta),
    info: (m, meta) => write('info', m, meta),
    warn: (m, meta) => write('warn', m, meta),
    error: (m, meta) => write('error', m, meta),
  };
}
