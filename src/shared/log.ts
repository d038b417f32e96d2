/**
 * What every long-running part of the manager logs through (the implementation is createLog in
 * src/manager/log.ts; tests pass a quiet one). Only the interface here, so any layer can take one.
 */
export interface Log {
  info(msg: string, meta?: Record<string, unknown>): void;
  warn(msg: string, meta?: Record<string, unknown>): void;
  error(msg: string, meta?: Record<string, unknown>): void;
}
