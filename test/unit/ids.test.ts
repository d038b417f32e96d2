import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { WorkerRef } from '../../src/contract/schemas';
import { legacyWorkerIdForTask, newRequestId, taskIdForRequest, workerIdForRequest, workerIdForTask } from '../../src/contract/ids';
import { containerNameFor, workflowIdFor } from '../../src/shared/ids';

/**
 * The worker-id namespace. Pinned here on purpose: changing it would give every in-flight request a
 * different worker id after a deploy and so break create's idempotency.
 */
const WORKER_ID_NAMESPACE = 'a4f0c9a2-6b1e-4f7e-9d35-2f6c1b8e7d40';

/** RFC 4122 §4.3 name-based UUID, version 5 (SHA-1), written from the RFC for this test. */
function referenceUuidV5(namespace: string, name: string): string {
  const digest = createHash('sha1')
    .update(Buffer.concat([Buffer.from(namespace.replace(/-/g, ''), 'hex'), Buffer.from(name, 'utf8')]))
    .digest();
  const b = Buffer.from(digest.subarray(0, 16));
  b.writeUInt8((b.readUInt8(6) & 0x0f) | 0x50, 6); // version 5
  b.writeUInt8((b.readUInt8(8) & 0x3f) | 0x80, 8); // variant 10xx
  const h = b.toString('hex');
  return [h.slice(0, 8), h.slice(8, 12), h.slice(12, 16), h.slice(16, 20), h.slice(20)].join('-');
}

const V5_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('referenceUuidV5 (the test oracle)', () => {
  it('matches the published vector uuid5(NAMESPACE_DNS, "python.org")', () => {
    expect(referenceUuidV5('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'python.org')).toBe('886313e1-3b8a-5372-9b90-0c9aee199e5d');
  });
});

describe('workerIdForRequest', () => {
  it('is the version-5 UUID of the request id in the worker-id namespace', () => {
    for (const id of ['req-1', 'a', 'x'.repeat(128), 'orchestrator:42.retry_3']) {
      expect(workerIdForRequest(id)).toBe(referenceUuidV5(WORKER_ID_NAMESPACE, id));
    }
  });

  it('hashes the request id as UTF-8', () => {
    expect(workerIdForRequest('é😀')).toBe(referenceUuidV5(WORKER_ID_NAMESPACE, 'é😀'));
  });

  it('is a lower-case RFC 4122 version-5 UUID that the contract accepts as a worker_id', () => {
    const id = workerIdForRequest('req-1');
    expect(id).toMatch(V5_RE);
    expect(WorkerRef.safeParse({ worker_id: id }).success).toBe(true);
  });

  it('is deterministic', () => {
    expect(workerIdForRequest('same')).toBe(workerIdForRequest('same'));
  });

  it('is a valid v5 UUID, deterministic, and matches the oracle for any request id (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (rid) => {
        const id = workerIdForRequest(rid);
        expect(id).toMatch(V5_RE);
        expect(workerIdForRequest(rid)).toBe(id);
        expect(id).toBe(referenceUuidV5(WORKER_ID_NAMESPACE, rid));
      }),
      { numRuns: 300 },
    );
  });

  it('differs for different request ids (property)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 64 }), fc.string({ maxLength: 64 }), (a, b) => {
        fc.pre(a !== b);
        expect(workerIdForRequest(a)).not.toBe(workerIdForRequest(b));
      }),
      { numRuns: 300 },
    );
  });

  it('differs for request ids that differ in one character or only in case', () => {
    const ids = ['req-1', 'req-2', 'REQ-1', 'req-1 ', 'req-10'].map(workerIdForRequest);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('other ids', () => {
  it('newRequestId gives distinct ids that are valid request ids', () => {
    const a = newRequestId();
    const b = newRequestId();
    expect(a).not.toBe(b);
    for (const id of [a, b]) expect(id).toMatch(/^auto-[0-9a-f-]{36}$/);
  });

  it('names workflows and containers worker-{worker_id}', () => {
    expect(workflowIdFor('abc')).toBe('worker-abc');
    expect(containerNameFor('abc')).toBe('worker-abc');
  });
});

describe('task ids and task worker ids', () => {
  it('a task worker id is in a namespace of its own: no create request id names it', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 60 }), (taskId) => {
        expect(workerIdForTask(taskId)).toMatch(V5_RE);
        expect(workerIdForTask(taskId)).not.toBe(workerIdForRequest(`task:${taskId}`));
        expect(workerIdForTask(taskId)).not.toBe(workerIdForRequest(taskId));
      }),
    );
  });

  it('tasks started before the task namespace are still found under their old worker id', () => {
    expect(legacyWorkerIdForTask('T-1')).toBe(referenceUuidV5(WORKER_ID_NAMESPACE, 'task:T-1'));
  });

  it('a task id derived from a request id is stable, distinct per request id, and a valid task id', () => {
    expect(taskIdForRequest('req-1')).toBe(taskIdForRequest('req-1'));
    expect(taskIdForRequest('req-1')).not.toBe(taskIdForRequest('req-2'));
    expect(taskIdForRequest('x'.repeat(128))).toMatch(/^task-[0-9a-f-]{36}$/);
  });
});
