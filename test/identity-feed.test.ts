import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';
import { Client, scan } from './backup.support.js';

/**
 * Demographics reach the matcher through the index: after a night is indexed, what its valid
 * ADT-00 messages say about patients is in the identity service; broken messages say nothing.
 */
describe('the identity feed after indexing', () => {
  const tmp = tempDir();
  let exchange: Exchange;
  let client: Client;

  beforeAll(async () => {
    exchange = await createExchange(testConfig(tmp.dir));
    const url = await exchange.listen();
    const { token } = await exchange.backup.addFacility({ id: 'F001', name: '検証病院', kind: 'hospital' });
    client = new Client(url, 'F001', token);
  }, 180_000);
  afterAll(async () => {
    await exchange?.stop();
    tmp.remove();
  });

  const localPatients = () =>
    exchange.db.selectFrom('identity_local_patient').select(['facility_id', 'local_id', 'family_kanji', 'given_kana', 'birth_date', 'sex']).orderBy('local_id').execute();

  it("observes the guideline patient of the samples' ADT-00, and nothing from broken files", async () => {
    const committed = await client.upload(scan(SAMPLES_ROOT));
    expect(committed.commit?.status).toBe(200);
    await exchange.jobs.runner.idle();
    expect(await localPatients()).toEqual([
      { facility_id: 'F001', local_id: '9999013', family_kanji: '患者', given_kana: 'タロウ', birth_date: '19480405', sex: 'M' },
    ]);
  });

  it('a second, unchanged night observes nothing new and duplicates nothing', async () => {
    const committed = await client.upload(scan(SAMPLES_ROOT));
    expect(committed.commit?.status).toBe(200);
    await exchange.jobs.runner.idle();
    expect(await localPatients()).toHaveLength(1);
  });
});
