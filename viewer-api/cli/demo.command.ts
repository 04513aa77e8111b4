import type { Command } from 'commander';
import { readConfig } from '../config.js';
import { createExchange } from '../exchange.js';
import { serveUntilSignal } from './server.commands.js';
import { ensureDemoData, readDemoState, demoStateFile, startDemoAiService, DEMO_AI_SERVICE, type DemoState } from '../demo/seed.js';
import { totpCode } from '../auth/totp.js';
import { DEVICE_HEADER } from '../routes/session.js';
import { report, UsageError, type OutputOptions } from './output.js';

/** What `npm start` prints once the demo is ready: where it runs and the commands to log in and read. */
export function howToLogIn(url: string, state: DemoState, dataDir: string): string {
  const physician = state.users.find((u) => u.role === 'physician')!;
  const device = state.devices.find((d) => d.facilityId === physician.facilityId)!;
  const linked = state.patients.find((p) => p.shape === 'hospitals-and-pharmacies' && p.links.length > 1) ?? state.patients[0];
  const aiPatient = state.patients.find((p) => p.shape === 'ai-and-research');
  const who = `${physician.facilityId}/${physician.username}`;
  const patient = linked?.regionalId ?? '<regional id>';
  const lines = [
    '',
    `Hakobune is running at ${url}`,
    `  health:        ${url}/health`,
    `  API document:  ${url}/api/openapi.json`,
    `  FHIR:          ${url}/fhir/metadata`,
    `  data folder:   ${dataDir}`,
    '',
    `Demo: ${state.facilities.map((f) => `${f.facilityId} (${f.kind}, ${f.files} files)`).join(', ')}`,
    `      ${state.patients.length} people linked across facilities, with consents of several shapes.`,
    `      Users at every facility and role (${state.users.length} in all), password "${state.password}";`,
    `      credentials, TOTP secrets and device credentials are in ${demoStateFile(dataDir)}.`,
    '',
    `Log in as the physician ${who} (in another terminal, in this folder; a TOTP code is accepted once):`,
    `  CODE=$(npx hakobune demo totp ${who})`,
    `  TOKEN=$(curl -s -X POST ${url}/api/auth/login -H 'Content-Type: application/json' \\`,
    `    -H '${DEVICE_HEADER}: ${device.credential}' \\`,
    `    -d '{"facilityId":"${physician.facilityId}","username":"${physician.username}","password":"${state.password}","totp":"'$CODE'"}' \\`,
    `    | node -pe 'JSON.parse(require("fs").readFileSync(0)).token')`,
    `Then read a patient seen at several facilities:`,
    `  curl -s ${url}/api/patients/${patient}/timeline -H "Authorization: Bearer $TOKEN"`,
    `  curl -s ${url}/fhir/Patient/${patient}/\\$everything -H "Authorization: Bearer $TOKEN"`,
    `  curl -s ${url}/api/records/<id> -H "Authorization: Bearer $TOKEN"            # a record's id from the timeline`,
    `  curl -s ${url}/api/records/<id>/original -H "Authorization: Bearer $TOKEN"   # its stored HL7 message`,
    '',
    `AI through the exchange (a local stand-in service, registered as "${DEMO_AI_SERVICE}"; only this patient consented to it):`,
    `  curl -s -X POST ${url}/api/ai/requests -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\`,
    `    -d '{"serviceId":"${DEMO_AI_SERVICE}","patientId":"${aiPatient?.regionalId ?? '<regional id>'}"}'`,
    `  curl -s ${url}/api/ai/requests/<id> -H "Authorization: Bearer $TOKEN"        # then .../<id>/result`,
    '',
    'Press Ctrl+C to stop.',
  ];
  return lines.join('\n');
}

/**
 * `hakobune demo` (what `npm start` runs): the exchange on the embedded default, with demo data
 * prepared through the upload protocol, the indexer and the consent service on first start.
 */
export function registerDemoCommand(program: Command): void {
  const demo = program
    .command('demo')
    .description('start the exchange on the embedded default with demo data (what `npm start` runs)')
    .action(async () => {
      const config = readConfig();
      const exchange = await createExchange(config);
      let standIn: Awaited<ReturnType<typeof startDemoAiService>> | undefined;
      try {
        const url = await exchange.listen();
        const fresh = !readDemoState(config.dataDir);
        if (fresh) process.stdout.write(`Preparing demo data in ${config.dataDir} (first start only) ...\n`);
        const started = Date.now();
        const state = await ensureDemoData(exchange, url, { say: (line) => process.stdout.write(`  ${line}\n`) });
        if (fresh) process.stdout.write(`Demo data ready in ${((Date.now() - started) / 1000).toFixed(1)} s.\n`);
        standIn = await startDemoAiService(exchange);
        process.stdout.write(howToLogIn(url, state, config.dataDir) + '\n');
      } catch (e) {
        await exchange.stop();
        await standIn?.close();
        throw e;
      }
      await serveUntilSignal(exchange);
      await standIn?.close();
    });

  demo
    .command('totp')
    .argument('<user>', 'a demo user as FACILITY/USERNAME, e.g. F001/physician')
    .description("print a demo user's current TOTP code (reads the demo file, not the database)")
    .option('--json', 'print the result as JSON')
    .action(async (user: string, opts: OutputOptions) => {
      const config = readConfig();
      const state = readDemoState(config.dataDir);
      if (!state) throw new UsageError(`no demo data in ${config.dataDir}: run \`npm start\` first`);
      const [facilityId, username] = user.split('/');
      const u = state.users.find((x) => x.facilityId === facilityId && x.username === username);
      if (!u) {
        const known = state.users.map((x) => `${x.facilityId}/${x.username}`).join(', ');
        throw new UsageError(`no demo user "${user}"; demo users: ${known}`);
      }
      const code = await totpCode(u.totpSecret, Date.now());
      report(opts, { user, code }, () => code);
    });
}
