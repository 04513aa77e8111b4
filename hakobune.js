#!/usr/bin/env node
// The hakobune command. The exchange is written in TypeScript and run through tsx's loader,
// so there is no build step between a clone and a running exchange.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('./viewer-api/cli/main.ts');
process.exitCode = await main(process.argv);
