// Entry of a record reading worker (read-pool.ts). Plain JavaScript: it registers the tsx loader
// itself, then loads the TypeScript reader, whatever the parent process was started with.
import { register } from 'tsx/esm/api';

register();
await import('./read-worker.ts');
