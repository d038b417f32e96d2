/**
 * What the wrapper repeats of an agent's own output in an error (its message, its stderr tail)
 * goes to the output stream, which orchestrators read: credentials are cut out first.
 */

/** Shapes of credentials whatever their value: API keys, bearer tokens, key headers. */
const PATTERNS: RegExp[] = [
  /\bsk-[A-Za-z0-9_-]{8,}/g,
  /\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/gi,
  /\b(x-api-key|api[_-]?key|authorization|password|token)(["']?\s*[:=]\s*["']?)[^\s"',}]{4,}/gi,
];

/** `text` with every known secret value and every credential-shaped string replaced by [redacted]. */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length >= 8) out = out.split(s).join('[redacted]');
  out = out.replace(PATTERNS[0]!, '[redacted]');
  out = out.replace(PATTERNS[1]!, (_m, scheme: string) => `${scheme} [redacted]`);
  out = out.replace(PATTERNS[2]!, (_m, name: string, sep: string) => `${name}${sep}[redacted]`);
  return out;
}

/** The last `maxLines` lines seen, each cut at `maxLineChars`: a bounded stderr tail. */
export class Tail {
  private readonly lines: string[] = [];
  constructor(
    private readonly maxLines = 20,
    private readonly maxLineChars = 500,
  ) {}

  push(line: string): void {
    this.lines.push(line.length > this.maxLineChars ? `${line.slice(0, this.maxLineChars)}…` : line);
    if (this.lines.length > this.maxLines) this.lines.shift();
  }

  clear(): void {
    this.lines.length = 0;
  }

  get text(): string {
    return this.lines.join('\n');
  }
}

/** Why a task ended badly, as one bounded, redacted text: the agent's message, what it reported on the way, its stderr tail. */
export function explain(
  parts: { message: string; problem?: string; stderr?: string },
  secrets: readonly string[],
  maxChars = 4_000,
): string {
  let text = parts.message;
  if (parts.problem && !text.includes(parts.problem)) text += `\nlast problem the agent reported: ${parts.problem}`;
  if (parts.stderr) text += `\nagent stderr (last lines):\n${parts.stderr}`;
  text = redact(text, secrets);
  return text.length > maxChars ? `${text.slice(0, maxChars)}… (cut at ${maxChars} characters)` : text;
}
