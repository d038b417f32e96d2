import { claude, extractResult, factory } from '../../src/wrapper/agents';

const line = (o: unknown) => JSON.stringify(o);

describe('extractResult', () => {
  test('takes the text inside the last <result> block, trimmed', () => {
    expect(extractResult('thinking <result> 42 </result> more')).toBe('42');
    expect(extractResult('<result>a</result> then <result>b\nc</result>')).toBe('b\nc');
  });
  test('falls back to the whole answer when there are no tags', () => {
    expect(extractResult('  just text \n')).toBe('just text');
  });
});

describe('claude adapter', () => {
  test('headless stream-json; the prompt goes through stdin, not argv', () => {
    const big = 'x'.repeat(200_000);
    const spec = claude.command(big, { allowedCommands: [], promptFile: '/tmp/p' });
    expect(spec.command).toBe('claude');
    expect(spec.args).toEqual(['-p', '--output-format', 'stream-json', '--verbose', '--dangerously-skip-permissions']);
    expect(spec.stdin).toBe(big);
    expect(spec.args.join(' ')).not.toContain('xxx');
  });

  test('allowed_commands become Claude Code permissions instead of skipping them; a session is resumed', () => {
    const spec = claude.command('p', { allowedCommands: ['git status', 'npm test'], session: 'sess-1', promptFile: '/tmp/p' });
    expect(spec.args).not.toContain('--dangerously-skip-permissions');
    const tools = spec.args[spec.args.indexOf('--allowedTools') + 1]!.split(',');
    expect(tools).toEqual(expect.arrayContaining(['Read', 'Edit', 'Write', 'Bash(git status:*)', 'Bash(npm test:*)']));
    expect(tools.some((t) => t === 'Bash')).toBe(false);
    expect(spec.args.slice(-2)).toEqual(['--resume', 'sess-1']);
  });

  test('maps stream-json onto contract events and reports session and final answer', () => {
    expect(claude.parseLine(line({ type: 'system', subtype: 'init', session_id: 's1' }))).toEqual({ events: [], session: 's1' });
    const a = claude.parseLine(line({ type: 'assistant', session_id: 's1', message: { content: [{ type: 'text', text: 'hi' }, { type: 'tool_use', id: 't1', name: 'Bash', input: { command: 'ls' } }] } }));
    expect(a.events.map((e) => e.type)).toEqual(['assistant', 'tool_use']);
    expect(JSON.parse(a.events[1]!.content)).toEqual({ id: 't1', name: 'Bash', input: { command: 'ls' } });
    const u = claude.parseLine(line({ type: 'user', message: { content: [{ type: 'tool_result', tool_use_id: 't1', content: [{ type: 'text', text: 'out' }], is_error: true }] } }));
    expect(JSON.parse(u.events[0]!.content)).toEqual({ tool_use_id: 't1', is_error: true, content: 'out' });
    expect(claude.parseLine(line({ type: 'result', subtype: 'success', is_error: false, result: '<result>r</result>', session_id: 's1' })).final).toEqual({ text: '<result>r</result>', isError: false });
    expect(claude.parseLine(line({ type: 'result', subtype: 'error_max_turns', is_error: true, session_id: 's1' })).final).toEqual({ text: 'error_max_turns', isError: true });
  });

  test('lines that are not stream-json stay stdout; blank lines are nothing', () => {
    expect(claude.parseLine('plain text').events).toEqual([{ type: 'stdout', content: 'plain text' }]);
    expect(claude.parseLine('{not json').events).toEqual([{ type: 'stdout', content: '{not json' }]);
    expect(claude.parseLine('').events).toEqual([]);
  });
});

describe('factory adapter', () => {
  test('droid exec reads the prompt from a file and continues a session', () => {
    const spec = factory.command('do it', { allowedCommands: [], session: 's2', model: 'custom:X-0', promptFile: '/tmp/prompt.txt' });
    expect(spec.command).toBe('droid');
    expect(spec.args).toEqual(['exec', '-o', 'stream-json', '-f', '/tmp/prompt.txt', '-m', 'custom:X-0', '--skip-permissions-unsafe', '--session-id', 's2']);
    expect(spec.files).toEqual({ '/tmp/prompt.txt': 'do it' });
    expect(factory.command('p', { allowedCommands: ['git'], promptFile: '/f' }).args).toContain('low');
  });

  test('maps droid stream-json', () => {
    expect(factory.parseLine(line({ type: 'message', role: 'assistant', text: 'hello', session_id: 's' })).events).toEqual([{ type: 'assistant', content: 'hello' }]);
    expect(factory.parseLine(line({ type: 'message', role: 'user', text: 'prompt' })).events).toEqual([]);
    expect(factory.parseLine(line({ type: 'tool_call', id: 'c1', toolName: 'Execute', parameters: { command: 'ls' } })).events[0]!.type).toBe('tool_use');
    expect(JSON.parse(factory.parseLine(line({ type: 'tool_result', id: 'c1', isError: true, error: { message: 'nope' } })).events[0]!.content)).toEqual({ tool_use_id: 'c1', is_error: true, content: 'nope' });
    expect(factory.parseLine(line({ type: 'completion', finalText: '<result>7</result>', session_id: 's' }))).toEqual({ events: [], session: 's', final: { text: '<result>7</result>', isError: false } });
  });
});
