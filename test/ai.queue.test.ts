import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createAiQueue } from '../viewer-api/ai/ai.queue.js';

/** The in-process AI queue's places: a request run at once takes one, as a queued job does. */
describe('in-process AI queue places', () => {
  const log = pino({ level: 'silent' });
  const gate = () => {
    let open!: () => void;
    const p = new Promise<void>((r) => (open = r));
    return { p, open };
  };

  it('gives places up to its concurrency, none before it starts, none ahead of waiting requests', async () => {
    const jobs = gate();
    const ran: string[] = [];
    const q = createAiQueue({ redisUrl: undefined, concurrency: 2, log, process: async (id) => {
      ran.push(id);
      await jobs.p;
    } });
    expect(q.reserve?.()).toBeUndefined(); // not started
    await q.start();
    const a = q.reserve!()!;
    const b = q.reserve!()!;
    expect(q.reserve!()).toBeUndefined(); // both places taken
    await q.enqueue('queued-1');
    expect(ran).toEqual([]); // waits for a place
    b.release();
    expect(ran).toEqual(['queued-1']);
    // A request waiting in the queue goes first: no place is given ahead of it.
    await q.enqueue('queued-2');
    expect(q.reserve!()).toBeUndefined();
    const task = gate();
    let taskDone = false;
    a.run(async () => {
      await task.p;
      taskDone = true;
    });
    expect(() => a.run(async () => {})).toThrow(/one task/);
    a.release(); // after run: no effect
    const idle = q.idle();
    let isIdle = false;
    void idle.then(() => (isIdle = true));
    jobs.open();
    await new Promise((r) => setTimeout(r, 10));
    expect(ran).toEqual(['queued-1', 'queued-2']);
    expect(isIdle).toBe(false); // the task run in a place still holds it
    task.open();
    await idle;
    expect(taskDone).toBe(true);
  });

  it('waits on close for a task run in a place, and gives none after', async () => {
    const q = createAiQueue({ redisUrl: undefined, concurrency: 4, log, process: async () => {} });
    await q.start();
    const task = gate();
    let finished = false;
    q.reserve!()!.run(async () => {
      await task.p;
      finished = true;
    });
    const closing = q.close();
    expect(q.reserve!()).toBeUndefined();
    setTimeout(task.open, 20);
    await closing;
    expect(finished).toBe(true);
  });

  it('logs a task that fails and frees its place', async () => {
    const q = createAiQueue({ redisUrl: undefined, concurrency: 1, log, process: async () => {} });
    await q.start();
    q.reserve!()!.run(async () => {
      throw new Error('boom');
    });
    await q.idle();
    expect(q.reserve!()).toBeDefined();
  });
});
