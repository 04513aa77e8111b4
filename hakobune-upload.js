#!/usr/bin/env node
// The facility uploader alone (`hakobune-upload --server ... --facility ... --root ...`): the
// same command as `hakobune upload`, loading only the uploader. See README "Uploader".
import { register } from 'tsx/esm/api';

register();
const { uploadMain } = await import('./ingest/uploader/cli.ts');
process.exitCode = await uploadMain(process.argv);
