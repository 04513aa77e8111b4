import type { Command } from 'commander';
import { readConfig } from '../config.js';
import { createExchange } from '../exchange.js';
import { serveUntilSignal } from './server.commands.js';

/**
 * `hakobune demo` (what `npm start` runs): the exchange on the embedded default, with demo data
 * prepared in the data folder on first start.
 */
export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('start the exchange on the embedded default with demo data (what `npm start` runs)')
    .action(async () => {
      const config = readConfig();
      const exchange = await createExchange(config);
      try {
        const url = await exchange.listen();
        const lines = [
          '',
          `Hakobune is running at ${url}`,
          `  health:     ${url}/health`,
          `  data folder: ${config.dataDir}`,
          '',
          'Press Ctrl+C to stop.',
        ];
        process.stdout.write(lines.join('\n') + '\n');
      } catch (e) {
        await exchange.stop();
        throw e;
      }
      await serveUntilSignal(exchange);
    });
}
