import { describe, expect, it } from 'vitest';
import { parseStoragePath } from './storage-path.js';

describe('parseStoragePath', () => {
  const name = '9999013_20110701_OMP-01_000000011000185_20110701224603984_01_1';
  it('reads snapshot paths with their root prefix, and bare standardized paths', () => {
    for (const p of [`standard/999/901/9999013/20110701/OMP-01/${name}`, `999/901/9999013/20110701/OMP-01/${name}`]) {
      expect(parseStoragePath(p)).toEqual({
        area: 'standard',
        folder: { patientId: '9999013', careDate: '20110701', dataType: 'OMP-01' },
        name: { patientId: '9999013', careDate: '20110701', dataType: 'OMP-01', orderNo: '000000011000185', timestamp: '20110701224603984', department: '01', condition: '1' },
      });
    }
  });

  it('reads extended storage: data-type folders with ^, content folders of six fields, nested files', () => {
    const p = parseStoragePath('extended/999/901/9999013/20240405/^退院時サマリー^^18842-5^退院時サマリー^LN/9999013_20240405_18842-5_1_20240405153000000_01/main_document.xml');
    expect(p).toMatchObject({ area: 'extended', folder: { dataType: '^退院時サマリー^^18842-5^退院時サマリー^LN' }, name: { orderNo: '1', condition: '' }, entry: 'main_document.xml' });
  });

  it('refuses what is not in a patient folder', () => {
    expect(parseStoragePath('standard/README.md')).toBeUndefined();
    expect(parseStoragePath('standard/999/901/9999013/20110701/OMP-01/x/y')).toBeUndefined();
    expect(parseStoragePath('extended/999/901/9999013/20110701/DOC')).toBeUndefined();
    expect(parseStoragePath(`999/901/9999013/20110701/OMP-01/bad_name`)).toMatchObject({ name: undefined, nameProblem: { problem: 'field-count' } });
  });
});
