// Entry of the matcher's worker thread (match-search.ts): the worker loads the TypeScript sources
// through tsx, as the hakobune command does, then serves one candidate search (match-worker.ts).
import { register } from 'tsx/esm/api';

register();
const { serveMatching } = await import('./match-worker.ts');
serveMatching();
