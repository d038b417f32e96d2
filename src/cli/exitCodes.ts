/**
 * The `wm` CLI's exit codes, documented in README.md ("Command line"): scripts branch on them.
 */
import type { ErrorCode } from '../shared/errorCodes';

export const EXIT = {
  /** The command did what was asked. */
  OK: 0,
  /** The worker or task ended badly (FAILED, task not ok, BUILD_FAILED, CAPACITY_TIMEOUT) or an internal error. */
  FAILED: 1,
  /** Bad arguments or options, unreadable input file, invalid configuration, INVALID_REQUEST. */
  USAGE: 2,
  /** No such worker or task (NOT_FOUND). */
  NOT_FOUND: 3,
  /** Temporal, Redis or Docker did not answer (UNAVAILABLE): safe to retry. */
  UNAVAILABLE: 4,
  /** `--wait` gave up after `--timeout` seconds; the worker or task goes on. */
  TIMEOUT: 5,
  /** Interrupted (Ctrl-C), as shells report SIGINT. */
  INTERRUPTED: 130,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** The exit code for a contract error code. */
export function exitCodeFor(code: ErrorCode | string): ExitCode {
  switch (code) {
    case 'INVALID_REQUEST':
      return EXIT.USAGE;
    case 'NOT_FOUND':
      return EXIT.NOT_FOUND;
    case 'UNAVAILABLE':
      return EXIT.UNAVAILABLE;
    default:
      return EXIT.FAILED;
  }
}
