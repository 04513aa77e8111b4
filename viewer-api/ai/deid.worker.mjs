// Entry of a de-identification worker thread (deid-pool.ts): the worker loads the TypeScript
// sources through tsx, as the hakobune command does, then serves requests (deid-worker.ts).
import { register } from 'tsx/esm/api';

register();
const { serveDeidentification } = await import('./deid-worker.ts');
serveDeidentification();
