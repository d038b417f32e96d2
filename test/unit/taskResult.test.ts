/**
 * One task read out of a worker's output events (src/contract/taskResult.ts): what a headless
 * task's result is made of, and what `wm send --wait` reports.
 */
import { TaskResultReader, type TaskEvent } from '../../src/contract/taskResult';

const ev = (type: string, content: string, task_id: string | null = 't1'): TaskEvent => ({ type, content, task_id });

describe('TaskResultReader', () => {
  test("reads only its task's events, up to task_completed", () => {
    const r = new TaskResultReader('w1', 't1');
    expect(r.read(ev('result', 'not mine', 't2'))).toBeUndefined();
    expect(r.read(ev('result', 'no task', null))).toBeUndefined();
    expect(r.read(ev('result', 'first'))).toBeUndefined();
    expect(r.read(ev('result', 'last'))).toBeUndefined();
    expect(r.result).toBe('last');
    expect(r.read(ev('task_completed', JSON.stringify({ status: 'ok', duration_ms: 1200, exit_code: 0 })))).toEqual({
      task_id: 't1',
      worker_id: 'w1',
      status: 'ok',
      result: 'last',
      duration_ms: 1200,
    });
  });

  test('a failed task without a result: its errors, joined, are the result; reason and usage pass on', () => {
    const r = new TaskResultReader('w1', 't1');
    r.read(ev('error', 'one'));
    r.read(ev('error', 'two'));
    const usage = { input_tokens: 1, output_tokens: 2 };
    expect(r.read(ev('task_completed', JSON.stringify({ status: 'cancelled', duration_ms: 5, reason: 'budget_exceeded', usage })))).toEqual(
      {
        task_id: 't1',
        worker_id: 'w1',
        status: 'cancelled',
        result: 'one\ntwo',
        error: 'one\ntwo',
        duration_ms: 5,
        reason: 'budget_exceeded',
        usage,
      },
    );
    expect(r.result).toBeNull();
  });

  test('an ok task without a result event has an empty result', () => {
    expect(new TaskResultReader('w1', 't1').read(ev('task_completed', '{"status":"ok","duration_ms":3}'))).toMatchObject({
      status: 'ok',
      result: '',
    });
  });

  // The worker writes its own output stream: a completion that does not read ends the task as an error.
  test.each(['not json', 'null', '42', '{"status":"done","duration_ms":"soon"}'])(
    'task_completed %p ends the task as an error',
    (content) => {
      expect(new TaskResultReader('w1', 't1').read(ev('task_completed', content))).toEqual({
        task_id: 't1',
        worker_id: 'w1',
        status: 'error',
        result: null,
        duration_ms: 0,
      });
    },
  );
});
