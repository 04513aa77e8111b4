/**
 * Group commit: calls made while a statement is in flight (with `concurrency` above 1, while that
 * many are) wait and go together in the next one. With many requests in flight, one statement and
 * one commit then serve many of them instead of one each; alone, a call goes at once (with
 * `atTurnEnd`, at the end of the event loop's turn, with the other calls of that turn). Each call
 * resolves only when its own statement has completed (a caller answers only once its row is
 * committed). `run` must be all-or-nothing (one statement) and answer one output per input, in
 * order.
 *
 * When a group's statement fails, by default the group is run again one call at a time, so that
 * one bad call (a row the database refuses) fails alone: the AI flow's insert, claim and finish
 * (viewer-api/ai/ai.service.ts). With `retryEach: false` every call of the group fails with it:
 * the audit log's appends (viewer-api/audit/audit.service.ts), where a statement whose commit is
 * unknown must not be run again.
 */
export function grouped<I, O>(
  run: (items: I[]) => Promise<O[]>,
  { maxGroup = 256, retryEach = true, concurrency = 1, atTurnEnd = false }: { maxGroup?: number; retryEach?: boolean; concurrency?: number; atTurnEnd?: boolean } = {},
): (item: I) => Promise<O> {
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error('a grouped statement needs a concurrency of at least 1');
  type Waiting = { item: I; resolve: (o: O) => void; reject: (e: unknown) => void };
  let queue: Waiting[] = [];
  /** Statements in flight. */
  let running = 0;
  let scheduled = false;

  const runChecked = async (items: I[]): Promise<O[]> => {
    const out = await run(items);
    if (out.length !== items.length) throw new Error(`a grouped statement answered ${out.length} results for ${items.length} calls`);
    return out;
  };

  async function runGroup(group: Waiting[]): Promise<void> {
    try {
      const out = await runChecked(group.map((w) => w.item));
      group.forEach((w, i) => w.resolve(out[i]!));
    } catch (e) {
      if (group.length === 1 || !retryEach) for (const w of group) w.reject(e);
      else await Promise.all(group.map((w) => runChecked([w.item]).then((out) => w.resolve(out[0]!), w.reject)));
    }
  }

  // Starts the waiting calls' statements while fewer than `concurrency` are in flight. With a
  // concurrency above 1, a call need not wait for the statement in flight to end before its own
  // starts (the AI flow's rows are independent of each other); the audit log's appends, chained
  // one after the other, go one at a time.
  function pump(): void {
    while (running < concurrency && queue.length) {
      const group = queue.length <= maxGroup ? queue : queue.slice(0, maxGroup);
      queue = queue.length <= maxGroup ? [] : queue.slice(maxGroup);
      running++;
      void runGroup(group).finally(() => {
        running--;
        pump();
      });
    }
  }

  return (item) =>
    new Promise<O>((resolve, reject) => {
      queue.push({ item, resolve, reject });
      if (!atTurnEnd) return pump();
      // With `atTurnEnd`, a statement starts at the end of the event loop's turn rather than at
      // the first call: the calls of one turn (the continuations of the requests a statement just
      // answered) then go together, instead of the first alone and the others waiting for it.
      if (!scheduled && running < concurrency) {
        scheduled = true;
        setImmediate(() => {
          scheduled = false;
          pump();
        });
      }
    });
}

/**
 * Shares a read between concurrent callers, but only a read that started after the caller did:
 * whoever joins gets data read no earlier than it asked, exactly as if it had read itself. A
 * caller that finds a read of its key running that started before it asked waits for that read
 * to end and joins the next one, which everyone who asked meanwhile shares (it starts after all
 * of them asked). Under load, the many requests in flight for one patient (or one service) then
 * make one read of it at a time, instead of one each.
 */
export function freshReads<T>() {
  interface Read {
    started: number;
    value: Promise<T>;
  }
  const running = new Map<string, Read>();
  const next = new Map<string, { value: Promise<T>; read: () => Promise<T> }>();
  const start = (key: string, read: () => Promise<T>): Promise<T> => {
    const entry: Read = { started: performance.now(), value: read() };
    running.set(key, entry);
    const done = () => {
      if (running.get(key) === entry) running.delete(key);
    };
    entry.value.then(done, done);
    return entry.value;
  };
  return (key: string, since: number, read: () => Promise<T>): Promise<T> => {
    const r = running.get(key);
    if (!r) return start(key, read);
    if (r.started >= since) return r.value;
    const waiting = next.get(key);
    if (waiting) {
      // The latest caller's read (its clock) is the one made: it started after every joiner asked.
      waiting.read = read;
      return waiting.value;
    }
    const n = { read, value: undefined as unknown as Promise<T> };
    const settled = () => undefined;
    n.value = r.value.then(settled, settled).then(() => {
      next.delete(key);
      return start(key, n.read);
    });
    next.set(key, n);
    return n.value;
  };
}
