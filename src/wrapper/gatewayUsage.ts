/**
 * The wrapper's question to the model gateway at the end of a task: what did the task's model
 * requests use, and did the worker's budget refuse one? Asked with the worker's own token.
 */
import http from 'node:http';
import type { TaskUsageReply } from '../host/modelGateway';
import { USAGE_PATH } from '../contract/gatewayToken';

/** Undefined when the gateway does not answer (e.g. the manager is restarting): usage unknown. */
export function fetchTaskUsage(gatewayUrl: string, token: string, taskId: string, timeoutMs = 5_000): Promise<TaskUsageReply | undefined> {
  return new Promise((resolve) => {
    const url = new URL(`${USAGE_PATH}?task_id=${encodeURIComponent(taskId)}`, gatewayUrl);
    const req = http.get(url, { headers: { 'x-api-key': token }, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve(res.statusCode === 200 ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as TaskUsageReply) : undefined);
        } catch {
          resolve(undefined);
        }
      });
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', () => resolve(undefined));
  });
}
