// Entry of a blob ingest worker (ingest-pool.ts). Plain JavaScript: it registers the tsx loader
// itself, then loads the TypeScript body, whatever the parent process was started with.
import { register } from 'tsx/esm/api';

register();
await import('./ingest-worker.ts');
