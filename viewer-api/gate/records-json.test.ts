import { describe, expect, it } from 'vitest';
import { CONTENT_JSON, recordsJson, recordsJsonParts, utf8Bytes, type VisibleRecord } from './gate.js';

function visible(id: number, content: unknown, storedText: string | Uint8Array): VisibleRecord {
  return {
    id,
    sourceFacilityId: 'F"01',
    localPatientId: 'L\u00e9 1',
    category: 'labs',
    dataType: 'OUL-01',
    careDate: id % 2 ? null : '2020-01-02',
    timestamp: '20200102030405',
    orderNo: '',
    department: null,
    condition: '1',
    basis: 'consent',
    get content() {
      return content;
    },
    [CONTENT_JSON]: storedText,
  };
}

describe('recordsJson', () => {
  it('gives what JSON.stringify gives, with the stored content text spliced in', () => {
    const a = { kind: 'lab', items: [{ code: '1', value: 2.5, note: 'line\nbreak "quoted" 日本語' }] };
    // PostgreSQL's jsonb text has its own spacing and key order: the values are what count.
    const stored = '{"items": [{"code": "1", "note": "line\\nbreak \\"quoted\\" 日本語", "value": 2.5}], "kind": "lab"}';
    const rs = [visible(1, a, stored), visible(2, null, 'null')];
    expect(JSON.parse(recordsJson(rs))).toEqual(JSON.parse(JSON.stringify(rs)));
    expect(recordsJson([])).toBe('[]');
  });

  it('gives the same bytes piece by piece as the joined text encoded at once', () => {
    const stored = '{"note": "日本語 \\u0000 \ud83d\ude00 😀 é"}';
    const rs = [visible(1, null, stored), visible(2, null, 'null'), visible(3, null, stored)];
    const parts = recordsJsonParts(rs, ['{"records":']);
    parts.push('}');
    expect(utf8Bytes(parts).equals(Buffer.from(`{"records":${recordsJson(rs)}}`, 'utf8'))).toBe(true);
    // A lone surrogate is encoded the same way (U+FFFD) by both.
    expect(utf8Bytes(['a\ud800b', 'c']).equals(Buffer.from('a\ud800bc', 'utf8'))).toBe(true);
    expect(utf8Bytes([]).length).toBe(0);
  });

  it('splices content given as UTF-8 bytes exactly as the same content given as text', () => {
    const stored = ['{"note": "日本語 \u0000 \ud83d\ude00 😀 é"}', 'null', '{"a": [1, 2.5, "x"]}', ''];
    // As the reader gets them: each content's own bytes (see preparedRows' bytesColumn).
    const bytes = stored.map((t) => Buffer.from(t, 'utf8'));
    const asText = stored.slice(0, 3).map((t, i) => visible(i + 1, null, t));
    const asBytes = stored.slice(0, 3).map((_, i) => visible(i + 1, null, bytes[i]!));
    expect(recordsJson(asBytes)).toBe(recordsJson(asText));
    expect(utf8Bytes(recordsJsonParts(asBytes, ['{"r":']).concat('}')).equals(utf8Bytes(recordsJsonParts(asText, ['{"r":']).concat('}')))).toBe(true);
    // A page larger than the scratch space it starts with grows it.
    const big = 'é'.repeat(300_000);
    expect(utf8Bytes(['[', big, ']']).equals(Buffer.from(`[${big}]`, 'utf8'))).toBe(true);
  });
});
