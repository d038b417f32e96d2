/**
 * Limits on what orchestrators send; bigger values get INVALID_REQUEST (or, on a worker's input
 * stream, an `error` event). Free of imports: the in-container wrapper bundles it.
 */
export const LIMITS = {
  instructionsBytes: 256 * 1024,
  promptBytes: 256 * 1024,
  allowedCommands: 200,
  allowedCommandChars: 256,
  taskIdChars: 128,
  hostPathChars: 4096,
  /**
   * The command entry's `payload` (JSON text). Large enough that every field at its own limit fits
   * whatever JSON escaping it needs: a control character such as NUL is escaped to 6 bytes
   * (`\u0000`), so 256 KiB of instructions can take 1.5 MiB of JSON.
   */
  payloadBytes: 4 * 1024 * 1024,
  /**
   * Every duration in seconds (task and input `timeout_s`, `idle_timeout_s`, `session_timeout_s`):
   * a week. A Node.js timer holds at most 2^31-1 ms (24.8 days); a longer one fires at once.
   */
  durationS: 7 * 24 * 3600,
} as const;
