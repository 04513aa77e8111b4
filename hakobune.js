#!/usr/bin/env node
// The hakobune command. The exchange is written in TypeScript and run through tsx's loader,
// so there is no build step between a clone and a running exchange.
import { register } from 'tsx/esm/api';

register();
if (process.argv[2] === 'upload') {
  // The facility uploader runs on the facility's machine: it loads only itself, not the
  // exchange (database drivers, PGlite, koa, queues), which saves about 100 MB of memory.
  const { uploadMain } = await import('./ingest/uploader/cli.ts');
  process.exitCode = await uploadMain([...process.argv.slice(0, 2), ...process.argv.slice(3)]);
} else {
  const { main } = await import('./viewer-api/cli/main.ts');
  process.exitCode = await main(process.argv);
}
