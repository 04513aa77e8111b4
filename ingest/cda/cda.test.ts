import { describe, expect, it } from 'vitest';
import { readStoredFile } from '../records/read.js';
import { CDA_MAX_DEPTH, CdaError, readCda, sniffContentType, UnsafeXmlError } from './cda.js';

const discharge = `<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <code code="18842-5" codeSystem="2.16.840.1.113883.6.1" displayName="退院時サマリー"/>
  <title>退院時サマリー &amp; 経過</title>
  <effectiveTime value="20240405153000+0900"/>
  <recordTarget><patientRole><id root="1.2.392.100495.20.3.51.11311234567" extension="1234567"/></patientRole></recordTarget>
  <author><time value="20240405"/><assignedAuthor><id extension="D001"/>
    <assignedPerson><name><family>医師</family><given>一郎</given></name></assignedPerson>
    <representedOrganization><name>登呂病院</name></representedOrganization></assignedAuthor></author>
  <component><structuredBody>
    <component><section><title>入院時診断</title><text>胃潰瘍 (K25)</text></section></component>
    <component><section><title>経過</title><text><paragraph>内視鏡にて治癒を確認。</paragraph><paragraph>退院。</paragraph></text></section></component>
  </structuredBody></component>
</ClinicalDocument>`;

describe('readCda', () => {
  it('reads title, LOINC code, date, patient, author and narrative', () => {
    const d = readCda(Buffer.from(discharge));
    expect(d).toMatchObject({
      kind: 'document',
      title: '退院時サマリー & 経過',
      code: { code: '18842-5', display: '退院時サマリー', system: '2.16.840.1.113883.6.1' },
      date: '20240405153000+0900',
      patientIdentifier: '1234567',
      author: { id: 'D001', family: '医師', given: '一郎', organization: '登呂病院' },
    });
    expect(d.text).toBe('入院時診断\n胃潰瘍 (K25)\n経過\n内視鏡にて治癒を確認。 退院。');
  });

  it('refuses a billion-laughs document before expanding anything', () => {
    const lol = `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">${Array.from({ length: 9 }, (_, i) => `<!ENTITY lol${i + 1} "${`&lol${i || ''};`.repeat(10)}">`).join('')}]><ClinicalDocument><title>&lol9;</title></ClinicalDocument>`;
    const t0 = performance.now();
    expect(() => readCda(lol)).toThrow(UnsafeXmlError);
    expect(performance.now() - t0).toBeLessThan(100);
  });

  it('refuses an external entity (file or URL)', () => {
    const xxe = `<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><ClinicalDocument><title>&x;</title></ClinicalDocument>`;
    expect(() => readCda(xxe)).toThrow(/DOCTYPE/);
    const param = `<!DOCTYPE d SYSTEM "http://127.0.0.1:1/evil.dtd"><ClinicalDocument/>`;
    expect(() => readCda(param)).toThrow(UnsafeXmlError);
  });

  it('bounds nesting depth and size, and rejects what is not a CDA document', () => {
    const deep = '<ClinicalDocument>' + '<a>'.repeat(CDA_MAX_DEPTH + 5) + '</a>'.repeat(CDA_MAX_DEPTH + 5) + '</ClinicalDocument>';
    expect(() => readCda(deep)).toThrow(CdaError);
    expect(() => readCda('<html><body/></html>')).toThrow(/ClinicalDocument/);
    expect(() => readCda('<ClinicalDocument><title>x</ClinicalDocument>')).toThrow(CdaError);
    expect(() => readCda(Buffer.alloc(21 * 1024 * 1024, 0x20))).toThrow(UnsafeXmlError);
  });

  it('sniffs attachments by their bytes', () => {
    expect(sniffContentType('a.bin', Buffer.from('%PDF-1.7\n'))).toBe('application/pdf');
    expect(sniffContentType('a.xml', Buffer.from('<?xml version="1.0"?>'))).toBe('application/xml');
  });
});

describe('extended storage files', () => {
  const folder = '123/456/1234567/20240405/^退院時サマリー^^18842-5^退院時サマリー^LN/1234567_20240405_18842-5_000000000000001_20240405153000000_01_1';
  it('a CDA document becomes a document record; its patient must match the folder', () => {
    const ok = readStoredFile({ facilityId: 'F', path: `${folder}/main_document.xml`, sha256: 'c'.repeat(64), bytes: Buffer.from(discharge) });
    expect(ok.status).toBe('ok');
    expect(ok.category).toBe('document');
    expect(ok.record?.content).toMatchObject({ kind: 'document', code: { code: '18842-5' } });
    const other = readStoredFile({ facilityId: 'F', path: `${folder.replaceAll('1234567', '7654321')}/main_document.xml`, sha256: 'c'.repeat(64), bytes: Buffer.from(discharge) });
    expect(other.status).toBe('flagged');
    expect(other.findings[0]).toMatchObject({ code: 'patient-id-mismatch' });
  });

  it('a PDF is an attachment with type, size and hash; unsafe XML is flagged', () => {
    const pdf = Buffer.from('%PDF-1.4\n%...\n');
    const o = readStoredFile({ facilityId: 'F', path: `${folder}/scan.pdf`, sha256: 'd'.repeat(64), bytes: pdf });
    expect(o.record?.content).toMatchObject({ attachments: [{ name: 'scan.pdf', contentType: 'application/pdf', size: pdf.length, sha256: 'd'.repeat(64) }] });
    const bad = readStoredFile({ facilityId: 'F', path: `${folder}/x.xml`, sha256: 'e'.repeat(64), bytes: Buffer.from('<!DOCTYPE x [<!ENTITY a "b">]><ClinicalDocument/>') });
    expect(bad).toMatchObject({ status: 'flagged', findings: [{ code: 'unsafe-xml' }] });
  });
});
