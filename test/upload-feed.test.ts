import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FeedError, parseFeedFile, parseFeedHeader, readFeedChanges } from '../ingest/uploader/feed.js';
import { uploadTree, UploadInputError, type UploadOptions } from '../ingest/uploader/upload.js';
import { httpTransport } from '../ingest/uploader/transport.js';
import { nodeTreeFs, type TreeFs } from '../ingest/uploader/walk.js';
import { startContractServer, type ContractServer } from './upload-contract-server.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';

// A header, then the message as a system writes it: ISO-2022-JP bytes, CR terminators.
const MESSAGE = Buffer.concat([Buffer.from('MSH|^~\\&|HIS||||20111220224447||ADT^A08|1|P|2.5||||||~ISO IR87\rPID|||9999013||'), Buffer.from([0x1b, 0x24, 0x42, 0x34, 0x5d, 0x1b, 0x28, 0x42]), Buffer.from('\r\x1c')]);

function trFile(dir: string, name: string, headers: string[], eol = '\r\n') {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, name), Buffer.concat([Buffer.from(headers.join(eol) + eol, 'latin1'), MESSAGE]));
}

describe('transaction-storage header parsing', () => {
  it('reads every field', () => {
    expect(parseFeedHeader('#SSMIX,2.00,1310000001,9999013,20111220,OMG-11,2011122000300,INS,24,20111220224447339', 'f')).toEqual({
      version: '2.00',
      facility: '1310000001',
      patientId: '9999013',
      careDate: '20111220',
      dataType: 'OMG-11',
      orderNo: '2011122000300',
      action: 'INS',
      department: '24',
      timestamp: '20111220224447339',
    });
  });

  it('is tolerant of "-" fields, spaces, case and extra trailing fields', () => {
    const r = parseFeedHeader(' #ssmix, 2.00 ,H1, 9999013 ,-,ADT-00,999999999999999,del,-,20111220224447,extra', 'f');
    expect(r).toMatchObject({ careDate: null, action: 'DEL', department: null, dataType: 'ADT-00' });
  });

  it.each([
    ['SSMIX,2.00,H,9999013,20111220,OMD,1,INS,01,20111220224447339', /no #SSMIX marker/],
    ['#SSMIX,2.00,H,9999013,20111220,OMD,1,INS,01', /9 fields, 10 needed/],
    ['#SSMIX,two,H,9999013,20111220,OMD,1,INS,01,20111220224447339', /version "two"/],
    ['#SSMIX,2.00,H,9999013,2011-12-20,OMD,1,INS,01,20111220224447339', /care date "2011-12-20"/],
    ['#SSMIX,2.00,H,9999013,20111220,OMD,1,UPD,01,20111220224447339', /action "UPD"/],
    ['#SSMIX,2.00,H,../../x,20111220,OMD,1,INS,01,20111220224447339', /patient ID/],
    ['#SSMIX,2.00,H,9999013,20111220,../OMD,1,INS,01,20111220224447339', /data type/],
    ['#SSMIX,2.00,H,9999013,20111220,OMD,1,INS,01,yesterday', /timestamp "yesterday"/],
  ])('rejects %j', (line, msg) => {
    expect(() => parseFeedHeader(line, 'TR_x.DAT line 1')).toThrow(FeedError);
    expect(() => parseFeedHeader(line, 'TR_x.DAT line 1')).toThrow(msg);
  });

  it('finds headers among message bytes, with CR, LF or CRLF line ends, and rejects a file without one', () => {
    for (const eol of ['\r', '\n', '\r\n']) {
      const bytes = Buffer.concat([Buffer.from(`#SSMIX,2.00,H,9999013,-,ADT-00,999999999999999,INS,-,20111220224447339${eol}`), MESSAGE]);
      expect(parseFeedFile(bytes, 'TR_1.DAT')).toHaveLength(1);
    }
    expect(() => parseFeedFile(MESSAGE, 'TR_20250101000000000_00001.DAT')).toThrow(/TR_20250101000000000_00001.DAT: no #SSMIX transaction header/);
    expect(() => parseFeedFile(Buffer.from([0xff, 0xfe, 0x00, 0x01]), 'TR_2.DAT')).toThrow(FeedError);
  });

  it('names the folders written after the last position, in walk order', async () => {
    const t = tempDir();
    try {
      trFile(t.dir, 'TR_20250101000000000_00001.DAT', ['#SSMIX,2.00,H,9999013,20111220,OMG-11,1,INS,24,20111220224447339']);
      trFile(t.dir, 'TR_20250102000000000_00001.DAT', ['#SSMIX,2.00,H,9999013,-,ADT-00,1,INS,-,20111220224447339']);
      trFile(t.dir, 'TR_20250102000000000_00002.DAT', [
        '#SSMIX,2.00,H,1234567,20250102,OMP-01,5,DEL,01,20250102000000000',
        '#SSMIX,2.00,H,9999013,-,ADT-00,1,INS,-,20111220224447339',
      ]);
      fs.writeFileSync(path.join(t.dir, 'README.txt'), 'not a feed file');
      const all = await readFeedChanges(t.dir, null);
      expect(all).toMatchObject({ files: 3, records: 4, lastFile: 'TR_20250102000000000_00002.DAT', needsFullScan: null });
      expect(all.folders).toEqual(['123/456/1234567/20250102/OMP-01', '999/901/9999013/-/ADT-00', '999/901/9999013/20111220/OMG-11']);
      const since = await readFeedChanges(t.dir, 'TR_20250101000000000_00001.DAT');
      expect(since.folders).toEqual(['123/456/1234567/20250102/OMP-01', '999/901/9999013/-/ADT-00']);
      const none = await readFeedChanges(t.dir, 'TR_20250102000000000_00002.DAT');
      expect(none).toMatchObject({ files: 0, folders: [], lastFile: 'TR_20250102000000000_00002.DAT' });
      // A patient ID too short to derive its folder asks for a full scan rather than a guess.
      trFile(t.dir, 'TR_20250103000000000_00001.DAT', ['#SSMIX,2.00,H,123,-,ADT-00,1,INS,-,20111220224447339']);
      expect((await readFeedChanges(t.dir, 'TR_20250102000000000_00002.DAT')).needsFullScan).toMatch(/patient "123"/);
    } finally {
      t.remove();
    }
  });
});

describe('uploadTree with --changes', () => {
  let server: ContractServer;
  let tmp: { dir: string; remove: () => void };
  let root: string;
  let feed: string;
  let opts: UploadOptions;
  let notes: string[];
  beforeEach(async () => {
    server = await startContractServer();
    tmp = tempDir('hakobune-feed-');
    root = path.join(tmp.dir, 'standard');
    feed = path.join(tmp.dir, 'transaction');
    fs.cpSync(SAMPLES_ROOT, root, { recursive: true, preserveTimestamps: true });
    const chmod = (d: string) => {
      fs.chmodSync(d, 0o755);
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) chmod(path.join(d, e.name));
        else fs.chmodSync(path.join(d, e.name), 0o644);
      }
    };
    chmod(root);
    trFile(feed, 'TR_20111220224447339_00001.DAT', ['#SSMIX,2.00,H,9999013,-,ADT-00,999999999999999,INS,-,20111220224447339']);
    opts = { server: server.url, facilityId: server.facilityId, root, cacheFile: path.join(tmp.dir, 'F001.cache'), changesDir: feed };
    notes = [];
  });
  afterEach(async () => {
    await server.close();
    tmp.remove();
  });
  const deps = (fsImpl: TreeFs = nodeTreeFs) => ({
    transport: httpTransport({ server: server.url, token: server.token }),
    fs: fsImpl,
    onNote: (n: string) => notes.push(n),
  });

  it('scans the whole tree first, then only the folders named by new feed files', async () => {
    const first = await uploadTree(opts, deps());
    expect(first.scan).toBe('full');
    expect(notes.some((n) => /no previous snapshot/.test(n))).toBe(true);

    // The system supersedes the OMG-01 order (_1 -> _2, new _1) and logs it in the feed.
    const dir = path.join(root, '999/901/9999013/20111220/OMG-01');
    const old = path.join(dir, '9999013_20111220_OMG-01_000201101200100_20111220224447339_-_1');
    fs.renameSync(old, old.replace(/_1$/, '_2'));
    fs.writeFileSync(path.join(dir, '9999013_20111220_OMG-01_000201101200100_20250105000000000_-_1'), MESSAGE);
    trFile(feed, 'TR_20250105000000000_00001.DAT', ['#SSMIX,2.00,H,9999013,20111220,OMG-01,000201101200100,INS,-,20250105000000000']);

    const listed: string[] = [];
    const counting: TreeFs = { ...nodeTreeFs, readdir: (d, o) => (listed.push(d), nodeTreeFs.readdir(d, o)) };
    const s = await uploadTree(opts, deps(counting));
    expect(s.scan).toBe('feed');
    expect(listed).toEqual([dir]);
    expect(s.renamedFiles).toBe(1);
    expect(s.manifestEntries).toBe(3); // _1 gone, _2 and the new _1
    expect(s.blobsSent).toBe(1);
    const snap = server.snapshots.get(s.snapshotId)!;
    expect(snap.size).toBe(23);
    expect(snap.has('standard/999/901/9999013/20111220/OMG-01/9999013_20111220_OMG-01_000201101200100_20111220224447339_-_2')).toBe(true);

    // Nothing new in the feed: no folder is listed at all.
    listed.length = 0;
    const quiet = await uploadTree(opts, deps(counting));
    expect(listed).toEqual([]);
    expect(quiet.manifestEntries).toBe(0);
  });

  it('rejects a garbage feed file with a message naming it, before contacting the exchange', async () => {
    await uploadTree(opts, deps());
    fs.writeFileSync(path.join(feed, 'TR_20250105000000000_00001.DAT'), 'this is not a transaction file\r\n');
    const before = server.log.length;
    const err = await uploadTree(opts, deps()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UploadInputError);
    expect((err as Error).message).toMatch(/TR_20250105000000000_00001.DAT: no #SSMIX transaction header.*run without --changes/);
    expect(server.log.length).toBe(before);
  });
});
