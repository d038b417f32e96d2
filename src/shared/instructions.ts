/**
 * What the agent reads at start-up: the orchestrator's instructions plus an "Allowed commands"
 * section built from allowed_commands (seed 001 §2.1: a rigid system prompt appended to them).
 */
import type { AgentType } from '../contract/schemas';

/** CLAUDE reads CLAUDE.md, FACTORY's droid reads AGENTS.md; both live in the working directory. */
export function instructionsFileName(agentType: AgentType): string {
  return agentType === 'CLAUDE' ? 'CLAUDE.md' : 'AGENTS.md';
}

export const WORKSPACE_DIR = '/workspace';

export function renderInstructions(instructions: string, allowedCommands: readonly string[]): string {
  if (allowedCommands.length === 0) return instructions;
  // Commands go in code spans, one line each, so markdown or line breaks in a command cannot
  // change the section's structure (the contract schema already refuses control characters).
  // eslint-disable-next-line no-control-regex
  const list = allowedCommands.map((c) => `- \`${c.replace(/`/g, "'").replace(/[\x00-\x1f\x7f]+/g, ' ')}\``).join('\n');
  const section =
    '## Allowed commands\n\n' +
    'You may run only the following commands (and their subcommands and arguments). ' +
    'Do not run any other program; if a task needs one, say so in your answer instead.\n\n' +
    `${list}\n`;
  if (instructions.length === 0) return section;
  const sep = instructions.endsWith('\n\n') ? '' : instructions.endsWith('\n') ? '\n' : '\n\n';
  return `${instructions}${sep}${section}`;
}
