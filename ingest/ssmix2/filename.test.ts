import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  dataTypeFolder,
  parseSsmix2FileName,
  parseSsmix2StoragePath,
  Ssmix2NameError,
  tryParseSsmix2FileName,
  type Ssmix2NameProblem,
} from './filename.js';
import { SAMPLES_ROOT } from '../../test/support/tmp.js';

function problemOf(fn: () => unknown): Ssmix2NameProblem | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(Ssmix2NameError);
    return (e as Ssmix2NameError).problem;
  }
  return undefined;
}

function listFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const abs = path.join(dir, d.name);
      if (d.isDirectory()) walk(abs);
      else out.push(path.relative(root, abs).split(path.sep).join('/'));
    }
  };
  walk(root);
  return out.sort();
}

describe('parseSsmix2FileName', () => {
  it('reads every field of a standard name', () => {
    expect(parseSsmix2FileName('9999013_20111220_OML-01_000000011000354_20111220103059123_15_1')).toEqual({
      patientId: '9999013',
      careDate: '20111220',
      dataType: 'OML-01',
      orderNo: '000000011000354',
      timestamp: '20111220103059123',
      department: '15',
      conditionFlag: '1',
    });
  });

  it('reads "-" care date and "-" department as null, and types without a number', () => {
    const n = parseSsmix2FileName('9999013_-_ADT-00_999999999999999_20111220224447339_-_1');
    expect(n.careDate).toBeNull();
    expect(n.department).toBeNull();
    expect(n.orderNo).toBe('999999999999999');
    expect(parseSsmix2FileName('9999013_20111013_OMD_123456789012345_20111014232213000_01_2').dataType).toBe('OMD');
  });

  it('accepts a 13-digit order number (widths are not fixed)', () => {
    const n = parseSsmix2FileName('9999013_20111220_OMG-11_2011122000300_20111220224447339_24_1');
    expect(n.orderNo).toBe('2011122000300');
    expect(n.conditionFlag).toBe('1');
  });

  it('reads the deleted and superseded flags', () => {
    expect(parseSsmix2FileName('0000001_20000401_OMP-11_123456789012346_20110701113813226_01_0').conditionFlag).toBe('0');
    expect(parseSsmix2FileName('0000001_20000401_OMP-11_123456789012346_20110701113813226_01_2').conditionFlag).toBe('2');
  });

  it('parses every file name of the real samples', () => {
    const files = listFiles(SAMPLES_ROOT);
    expect(files.length).toBe(22);
    for (const f of files) expect(() => parseSsmix2FileName(path.posix.basename(f))).not.toThrow();
  });

  it.each<[string, Ssmix2NameProblem]>([
    ['', 'empty'],
    ['9999013_20111220_OML-01_000000011000354_20111220103059123_15', 'field-count'],
    ['9999013_20111220_OML-01_000000011000354_20111220103059123_15_1_x', 'field-count'],
    ['_20111220_OML-01_000000011000354_20111220103059123_15_1', 'patient-id'],
    ['99 13_20111220_OML-01_000000011000354_20111220103059123_15_1', 'patient-id'],
    ['9999013_2011122_OML-01_000000011000354_20111220103059123_15_1', 'care-date'],
    ['9999013_20111320_OML-01_000000011000354_20111220103059123_15_1', 'care-date'],
    ['9999013_20110230_OML-01_000000011000354_20111220103059123_15_1', 'care-date'],
    ['9999013_20111220_oml-01_000000011000354_20111220103059123_15_1', 'data-type'],
    ['9999013_20111220_OML-1_000000011000354_20111220103059123_15_1', 'data-type'],
    ['9999013_20111220_OML-01_1234567890123456_20111220103059123_15_1', 'order-no'],
    ['9999013_20111220_OML-01__20111220103059123_15_1', 'order-no'],
    ['9999013_20111220_OML-01_000000011000354_2011122010305_15_1', 'timestamp'],
    ['9999013_20111220_OML-01_000000011000354_201112201030591234_15_1', 'timestamp'],
    ['9999013_20111220_OML-01_000000011000354_20111220103059123__1', 'department'],
    ['9999013_20111220_OML-01_000000011000354_20111220103059123_15_3', 'condition-flag'],
    ['9999013_20111220_OML-01_000000011000354_20111220103059123_15_', 'condition-flag'],
  ])('rejects %j as %s', (name, problem) => {
    expect(problemOf(() => parseSsmix2FileName(name))).toBe(problem);
    expect(tryParseSsmix2FileName(name)).toBeInstanceOf(Ssmix2NameError);
  });

  it('names the offending value in the message', () => {
    expect(() => parseSsmix2FileName('9999013_20111220_OML-01_000000011000354_20111220103059123_15_7')).toThrow(/condition flag.*"7"/);
  });
});

describe('parseSsmix2StoragePath', () => {
  it('accepts every well-placed sample file', () => {
    const good = listFiles(SAMPLES_ROOT).filter((f) => !f.includes('/ADT-31/'));
    expect(good.length).toBe(21);
    for (const f of good) expect(parseSsmix2StoragePath(f).path).toBe(f);
  });

  it('flags the broken sample whose name disagrees with its folder in patient, date and type', () => {
    const broken = listFiles(SAMPLES_ROOT).find((f) => f.includes('/20000401/ADT-31/'));
    expect(broken).toBeDefined();
    let err: Ssmix2NameError | undefined;
    try {
      parseSsmix2StoragePath(broken!);
    } catch (e) {
      err = e as Ssmix2NameError;
    }
    expect(err).toBeInstanceOf(Ssmix2NameError);
    expect(err!.problem).toBe('folder-mismatch');
    expect(err!.message).toMatch(/patient ID 9999013 is in folder 0000001/);
    expect(err!.message).toMatch(/care date 20110630 is in folder 20000401/);
    expect(err!.message).toMatch(/data type OMP-11 is in folder ADT-31/);
    // The name itself is well-formed: only its placement is wrong.
    expect(() => parseSsmix2FileName(path.posix.basename(broken!))).not.toThrow();
  });

  it('rejects paths of the wrong shape and wrong prefix folders', () => {
    expect(problemOf(() => parseSsmix2StoragePath('999/901/9999013/-/ADT-00'))).toBe('path-shape');
    expect(problemOf(() => parseSsmix2StoragePath('999//9999013/-/ADT-00/x'))).toBe('path-shape');
    expect(
      problemOf(() => parseSsmix2StoragePath('999/902/9999013/-/ADT-00/9999013_-_ADT-00_999999999999999_20111220224447339_-_1')),
    ).toBe('folder-mismatch');
  });
});

describe('dataTypeFolder', () => {
  it('builds the 3+3 prefix folders', () => {
    expect(dataTypeFolder('9999013', '20111220', 'OMG-11')).toBe('999/901/9999013/20111220/OMG-11');
    expect(dataTypeFolder('9999013', null, 'ADT-00')).toBe('999/901/9999013/-/ADT-00');
  });
  it('refuses to guess for short IDs and rejects unsafe parts', () => {
    expect(dataTypeFolder('12345', null, 'ADT-00')).toBeNull();
    expect(dataTypeFolder('../../etc', null, 'ADT-00')).toBeNull();
    expect(dataTypeFolder('9999013', '2011', 'ADT-00')).toBeNull();
    expect(dataTypeFolder('9999013', null, '../x')).toBeNull();
  });
});
