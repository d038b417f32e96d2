/**
 * Reads `worker:{id}:input` after the last entry taken and hands each entry on: prompts (and
 * prompts that cannot run, with why) to the task runner's queue, cancels to the runner, anything
 * else back as an `error` event. Reads ahead at most about 100 entries.
 */
import type Redis from 'ioredis';
import { keys } from '../contract/keys';
import type { EventSink } from './events';
import { decodeInputEntry } from '../contract/codec';
import { describeProblems } from './input';
import { say } from './log';
import type { TaskRunner } from './taskRunner';

export interface InputReaderOptions {
  /** The blocking-read connection; disconnected by `stop`. */
  reader: Redis;
  workerId: string;
  /** The last entry taken: reading starts after it. */
  from: string;
  defaultTimeoutS: number;
  tasks: Pick<TaskRunner, 'backlog' | 'enqueue' | 'cancel'>;
  sink: EventSink;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class InputReader {
  private stopping = false;
  private readFrom: string;

  constructor(private readonly o: InputReaderOptions) {
    this.readFrom = o.from;
  }

  /** Reads until stopped; a failed read is retried. */
  async run(): Promise<void> {
    const { reader, workerId, defaultTimeoutS, tasks, sink } = this.o;
    while (!this.stopping) {
      try {
        if (tasks.backlog >= 100) {
          await sleep(200); // enough read ahead
          continue;
        }
        const res = (await reader.xread('COUNT', 50, 'BLOCK', 5000, 'STREAMS', keys.input(workerId), this.readFrom)) as
          [string, [string, string[]][]][] | null;
        for (const [id, fields] of res?.[0]?.[1] ?? []) {
          this.readFrom = id;
          const entry = decodeInputEntry(id, fields, defaultTimeoutS);
          if (entry.kind === 'cancel') tasks.cancel(id, entry.taskId);
          else if (entry.kind === 'prompt') tasks.enqueue({ task: entry.task });
          else if (entry.kind === 'invalid') {
            const task = { entryId: id, taskId: entry.taskId, prompt: '', timeoutS: defaultTimeoutS };
            tasks.enqueue({ task, refusal: describeProblems(id, entry.problems) });
          } else sink.push('error', `input ${id}: unknown type "${entry.type}" (expected prompt or cancel)`, entry.taskId);
        }
      } catch (err) {
        if (this.stopping) break;
        say(`input read failed, retrying: ${(err as Error).message}`);
        await sleep(1000);
      }
    }
  }

  /** No more reads: the blocking one in flight ends now. */
  stop(): void {
    this.stopping = true;
    this.o.reader.disconnect();
  }
}
