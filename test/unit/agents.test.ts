import { claude, commandAllowed, extractResult, factory, parseClaudeLine } from '../../src/wrapper/agents';
import { explain, redact } from '../../src/wrapper/redact';

const line = (o: unknown) => JSON.stringify(o);
const base = { newSession: 'new-1', allowedCommands: [] as string[], workspace: '/workspace' };

describe('extractResult', () => {
  test('takes the text inside the last <result> block, trimmed', () => {
    expect(extractResult('thinking <result> 42 </result> more')).toBe('42');
    expect(extractResult('<result>a</result> then <result>b\nc</result>')).toBe('b\nc');
  });
  test('falls back to the whole answer when there are no tags', () => {
    expect(extractResult('  just text \n')).toBe('just text');
  });
});

describe('claude protocol', () => {
  test('one long-lived stream-json process; each prompt is a user message line, never argv', () => {
    const spec = claude.start(base);
    expect(spec.command).toBe('claude');
    expect(spec.args).toEqual([
      '-p',
      '--input-format',
      'stream-json',
      '--output-format',
      'stream-json',
      '--verbose',
      '--dangerously-skip-permissions',
    ]);
    const big = 'x'.repeat(200_000);
    const [turn] = claude.turn(big, 't1');
    expect(JSON.parse(turn!)).toEqual({ type: 'user', message: { role: 'user', content: big } });
    expect(JSON.parse(claude.interrupt()[0]!)).toMatchObject({ type: 'control_request', request: { subtype: 'interrupt' } });
  });

  test('allowed_commands become Claude Code permissions instead of skipping them; a session is resumed', () => {
    const spec = claude.start({ ...base, allowedCommands: ['git status', 'npm test'], session: 'sess-1' });
    expect(spec.args).not.toContain('--dangerously-skip-permissions');
    const tools = spec.args[spec.args.indexOf('--allowedTools') + 1]!.split(',');
    expect(tools).toEqual(expect.arrayContaining(['Read', 'Edit', 'Write', 'Bash(git status:*)', 'Bash(npm test:*)']));
    expect(tools.some((t) => t === 'Bash')).toBe(false);
    expect(spec.args.slice(-2)).toEqual(['--resume', 'sess-1']);
  });

  test('maps stream-json onto contract events; a result ends the turn with its usage and turns', () => {
    expect(parseClaudeLine(line({ type: 'system', subtype: 'init', session_id: 's1' }))).toEqual({ events: [], session: 's1' });
    const a = parseClaudeLine(
      line({
        type: 'assistant',
        session_id: 's1',
        message: {
          content: [
            { type: 'text', text: 'hi' },
            { type: 'tool_use', id: 't1', name: 'Bash', input: { command: 'ls' } },
          ],
        },
      }),
    );
    expect(a.events.map((e) => e.type)).toEqual(['assistant', 'tool_use']);
    expect(JSON.parse(a.events[1]!.content)).toEqual({ id: 't1', name: 'Bash', input: { command: 'ls' } });
    const u = parseClaudeLine(
      line({
        type: 'user',
        message: { content: [{ type: 'tool_result', tool_use_id: 't1', content: [{ type: 'text', text: 'out' }], is_error: true }] },
      }),
    );
    expect(JSON.parse(u.events[0]!.content)).toEqual({ tool_use_id: 't1', is_error: true, content: 'out' });
    const usage = { input_tokens: 12, output_tokens: 20, cache_read_input_tokens: 3, cache_creation_input_tokens: 4, server_tool_use: {} };
    expect(
      parseClaudeLine(
        line({ type: 'result', subtype: 'success', is_error: false, result: '<result>r</result>', num_turns: 2, usage, session_id: 's1' }),
      ).end,
    ).toEqual({
      text: '<result>r</result>',
      isError: false,
      interrupted: false,
      turns: 2,
      usage: { input_tokens: 12, output_tokens: 20, cache_read_input_tokens: 3, cache_creation_input_tokens: 4 },
    });
    expect(parseClaudeLine(line({ type: 'result', subtype: 'error_max_turns', is_error: true })).end).toMatchObject({
      text: 'error_max_turns',
      isError: true,
    });
    expect(parseClaudeLine(line({ type: 'result', subtype: 'error_during_execution', is_error: true })).end).toMatchObject({
      isError: true,
      interrupted: true,
    });
  });

  test('a model API retry is a problem reported on the way, not the end', () => {
    const p = parseClaudeLine(
      line({ type: 'system', subtype: 'api_retry', attempt: 2, max_retries: 10, error_status: 401, error: 'authentication_failed' }),
    );
    expect(p.end).toBeUndefined();
    expect(p.problem).toBe('model API error 401 (authentication_failed), retry 2 of 10');
  });

  test('lines that are not stream-json stay stdout; blank lines are nothing', () => {
    expect(parseClaudeLine('plain text').events).toEqual([{ type: 'stdout', content: 'plain text' }]);
    expect(parseClaudeLine('{not json').events).toEqual([{ type: 'stdout', content: '{not json' }]);
    expect(parseClaudeLine('').events).toEqual([]);
  });
});

describe('factory protocol (droid stream-jsonrpc)', () => {
  const rpc = (l: string) => JSON.parse(l) as { method: string; id: string; params: Record<string, unknown> };

  test('a new session gets the id chosen here; a known one is loaded, with a new one if loading fails', () => {
    const fresh = factory.start({ ...base, model: 'custom:X-0' });
    expect(fresh.args).toEqual([
      'exec',
      '--input-format',
      'stream-jsonrpc',
      '--output-format',
      'stream-jsonrpc',
      '--skip-permissions-unsafe',
    ]);
    expect(fresh.session).toBe('new-1');
    expect(rpc(fresh.open[0]!.line)).toMatchObject({
      method: 'droid.initialize_session',
      params: { sessionId: 'new-1', cwd: '/workspace', modelId: 'custom:X-0' },
    });
    const resumed = factory.start({ ...base, session: 'old', allowedCommands: ['git'] });
    expect(resumed.args).not.toContain('--skip-permissions-unsafe');
    expect(resumed.session).toBe('old');
    expect(rpc(resumed.open[0]!.line)).toMatchObject({ method: 'droid.load_session', params: { sessionId: 'old' } });
    expect(resumed.open[0]!.fallback?.session).toBe('new-1');
    expect(rpc(resumed.open[1]!.line)).toMatchObject({ method: 'droid.update_session_settings', params: { autonomyLevel: 'low' } });
    expect(rpc(factory.turn('do it', 'turn-9')[0]!)).toMatchObject({
      method: 'droid.add_user_message',
      params: { messageId: 'turn-9', text: 'do it' },
    });
    expect(rpc(factory.interrupt()[0]!).method).toBe('droid.interrupt_session');
  });

  const note = (notification: unknown) => line({ type: 'notification', method: 'droid.session_notification', params: { notification } });

  test('messages, tool calls and results become events; agent_turn_completed ends the turn with its usage', () => {
    const p = factory.parser({ allowedCommands: [] });
    p.beginTurn('turn-1');
    expect(p.parse(line({ type: 'response', id: 'init', result: {} })).response).toEqual({ id: 'init' });
    const tool = p.parse(
      note({
        type: 'create_message',
        message: { role: 'assistant', content: [{ type: 'tool_use', id: 'c1', name: 'Execute', input: { command: 'ls' } }] },
      }),
    );
    expect(tool.events.map((e) => e.type)).toEqual(['tool_use']);
    expect(JSON.parse(p.parse(note({ type: 'tool_result', toolUseId: 'c1', content: 'out', isError: false })).events[0]!.content)).toEqual({
      tool_use_id: 'c1',
      is_error: false,
      content: 'out',
    });
    expect(
      p.parse(note({ type: 'create_message', message: { role: 'user', content: [{ type: 'text', text: 'prompt' }] } })).events,
    ).toEqual([]);
    expect(
      p.parse(
        note({ type: 'create_message', message: { role: 'assistant', content: [{ type: 'text', text: 'done <result>7</result>' }] } }),
      ).events,
    ).toEqual([{ type: 'assistant', content: 'done <result>7</result>' }]);
    expect(p.parse(note({ type: 'agent_turn_completed', reason: 'completed', turnId: 'other' })).end).toBeUndefined();
    const end = p.parse(
      note({
        type: 'agent_turn_completed',
        reason: 'completed',
        turnId: 'turn-1',
        tokenUsage: { inputTokens: 24, outputTokens: 40, cacheReadTokens: 1, cacheCreationTokens: 2 },
      }),
    ).end;
    expect(end).toEqual({
      text: 'done <result>7</result>',
      isError: false,
      interrupted: false,
      turns: 2,
      usage: { input_tokens: 24, output_tokens: 40, cache_read_input_tokens: 1, cache_creation_input_tokens: 2 },
    });
  });

  test("a failed turn carries droid's own error message; an interrupted one says so", () => {
    const p = factory.parser({ allowedCommands: [] });
    p.beginTurn('t');
    expect(p.parse(note({ type: 'error', message: '401 {"error":{"message":"bad key"}}' })).problem).toContain('401');
    expect(p.parse(note({ type: 'agent_turn_completed', reason: 'model_authentication_failed', turnId: 't' })).end).toMatchObject({
      isError: true,
      text: '401 {"error":{"message":"bad key"}} (droid: model_authentication_failed)',
    });
    p.beginTurn('u');
    expect(p.parse(note({ type: 'agent_turn_completed', reason: 'cancelled', turnId: 'u' })).end).toMatchObject({
      isError: true,
      interrupted: true,
    });
  });

  test('permission requests are granted only for allowed commands; other requests are refused', () => {
    const p = factory.parser({ allowedCommands: ['git status', 'npm test'] });
    const ask = (fullCommand: string) =>
      JSON.parse(
        p.parse(
          line({
            type: 'request',
            id: 'r1',
            method: 'droid.request_permission',
            params: {
              toolUses: [{ toolUse: {}, details: { type: 'exec', fullCommand } }],
              options: [{ value: 'proceed_once' }, { value: 'cancel' }],
            },
          }),
        ).reply![0]!,
      );
    expect(ask('npm test -- --watch').result.selectedOption).toBe('proceed_once');
    expect(ask('npm install evil').result.selectedOption).toBe('cancel');
    expect(ask('git statusx').result.selectedOption).toBe('cancel');
    expect(
      JSON.parse(p.parse(line({ type: 'request', id: 'r2', method: 'droid.ask_user', params: {} })).reply![0]!).error.message,
    ).toContain('droid.ask_user');
    expect(commandAllowed('git status --short', ['git status'])).toBe(true);
  });
});

describe('errors repeat no secrets', () => {
  test('known values and credential-shaped strings are cut out; the text is bounded', () => {
    const token = 'wm-gw-0123456789abcdef';
    expect(redact(`key ${token} and sk-ant-abcdefghijkl, Authorization: Bearer abcdefghijkl, "x-api-key":"zzzzzzzz"`, [token])).toBe(
      'key [redacted] and [redacted], Authorization: [redacted] [redacted], "x-api-key":"[redacted]"',
    );
    const e = explain({ message: 'boom', problem: 'retry 3', stderr: 'x'.repeat(10_000) }, [], 100);
    expect(e.startsWith('boom\nlast problem the agent reported: retry 3\nagent stderr (last lines):\n')).toBe(true);
    expect(e.length).toBeLessThan(160);
  });
});
