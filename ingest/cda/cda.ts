import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { DocumentRecord, Person } from '../records/types.js';

/**
 * Reads HL7 CDA R2 documents of SS-MIX2 extended storage (discharge summaries 18842-5, referral
 * letters 57133-1, progress notes). The XML comes from facilities, so it is untrusted: a DOCTYPE
 * (and with it every entity definition, internal or external) is refused before parsing, only
 * the five predefined entities and character references are decoded, and size and nesting depth
 * are bounded. CDA R2 never needs a DTD, so nothing legitimate is lost.
 */
export const CDA_MAX_BYTES = 20 * 1024 * 1024;
export const CDA_MAX_DEPTH = 64;

export class UnsafeXmlError extends Error {
  override name = 'UnsafeXmlError';
}
export class CdaError extends Error {
  override name = 'CdaError';
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  removeNSPrefix: true,
  // Predefined entities and &#...; only: a DOCTYPE is rejected before we get here.
  processEntities: { enabled: true, maxEntityCount: 1, maxEntitySize: 1, maxExpandedLength: 1, maxTotalExpansions: 1 },
  htmlEntities: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  maxNestedTags: CDA_MAX_DEPTH,
  isArray: (name) => ['component', 'section', 'author', 'id', 'given', 'paragraph', 'item', 'tr', 'td', 'content'].includes(name),
});

type Node = Record<string, unknown>;

/** Parses a CDA R2 document; throws UnsafeXmlError or CdaError with a reason. */
export function readCda(xml: Uint8Array | string): Omit<DocumentRecord, 'attachments'> {
  const size = typeof xml === 'string' ? Buffer.byteLength(xml) : xml.byteLength;
  if (size > CDA_MAX_BYTES) throw new UnsafeXmlError(`the document is ${size} bytes, above the ${CDA_MAX_BYTES} byte limit`);
  let text: string;
  try {
    text = typeof xml === 'string' ? xml : new TextDecoder('utf-8', { fatal: true }).decode(xml);
  } catch {
    throw new CdaError('the XML is not valid UTF-8');
  }
  if (/<!DOCTYPE/i.test(text) || /<!ENTITY/i.test(text)) {
    throw new UnsafeXmlError('the XML declares a DOCTYPE or entities, which CDA R2 never needs; refused (entity expansion / external entity risk)');
  }
  // The parser is lenient about mismatched tags; a document must be well formed to be trusted.
  const valid = XMLValidator.validate(text);
  if (valid !== true) throw new CdaError(`the XML is not well formed: ${valid.err.msg} (line ${valid.err.line})`);
  let doc: Node;
  try {
    doc = parser.parse(text) as Node;
  } catch (e) {
    throw new CdaError(`the XML is not well formed: ${(e as Error).message.slice(0, 200)}`);
  }
  const cd = doc['ClinicalDocument'] as Node | undefined;
  if (!cd || typeof cd !== 'object') throw new CdaError('the root element is not ClinicalDocument (HL7 CDA R2)');

  const code = cd['code'] as Node | undefined;
  const patientRole = ((cd['recordTarget'] as Node | undefined)?.['patientRole'] ?? {}) as Node;
  const ids = (patientRole['id'] as Node[] | undefined) ?? [];
  const author = ((cd['author'] as Node[] | undefined) ?? [])[0];
  const assigned = (author?.['assignedAuthor'] ?? {}) as Node;
  const name = ((assigned['assignedPerson'] as Node | undefined)?.['name'] ?? undefined) as Node | string | undefined;
  const org = (assigned['representedOrganization'] as Node | undefined)?.['name'];

  const out: Omit<DocumentRecord, 'attachments'> = { kind: 'document', text: narrative(cd['component']) };
  const title = textOf(cd['title']);
  if (title) out.title = title;
  if (code && typeof code === 'object' && code['@code']) {
    out.code = { code: String(code['@code']) };
    if (code['@displayName']) out.code.display = String(code['@displayName']);
    if (code['@codeSystem']) out.code.system = String(code['@codeSystem']);
  }
  const eff = (cd['effectiveTime'] as Node | undefined)?.['@value'];
  if (eff) out.date = String(eff);
  const pid = ids.find((i) => i['@extension']) ?? ids[0];
  if (pid?.['@extension']) out.patientIdentifier = String(pid['@extension']);
  if (author) {
    const p: Person & { organization?: string } = {};
    const aid = ((assigned['id'] as Node[] | undefined) ?? [])[0]?.['@extension'];
    if (aid) p.id = String(aid);
    if (name && typeof name === 'object') {
      const family = textOf(name['family']);
      const given = textOf(name['given']);
      if (family) p.family = family;
      if (given) p.given = given;
    } else if (typeof name === 'string' && name) p.family = name;
    if (org) p.organization = textOf(org);
    out.author = p;
  }
  return out;
}

function textOf(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'string' || typeof v === 'number') return String(v);
  if (Array.isArray(v)) return v.map(textOf).filter(Boolean).join(' ');
  if (typeof v === 'object') {
    return Object.entries(v as Node)
      .filter(([k]) => !k.startsWith('@'))
      .map(([, x]) => textOf(x))
      .filter(Boolean)
      .join(' ');
  }
  return '';
}

/** The human-readable narrative: each section's title and text, in document order. */
function narrative(component: unknown): string {
  const parts: string[] = [];
  const walk = (node: unknown) => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (!node || typeof node !== 'object') return;
    const n = node as Node;
    if (n['structuredBody']) walk((n['structuredBody'] as Node)['component']);
    if (n['nonXMLBody']) parts.push(textOf((n['nonXMLBody'] as Node)['text']));
    if (n['section']) {
      for (const s of n['section'] as Node[]) {
        const t = textOf(s['title']);
        const body = textOf(s['text']);
        if (t) parts.push(t);
        if (body) parts.push(body);
        walk(s['component']);
      }
    }
  };
  walk(component);
  return parts.join('\n');
}

/** A content type from the file's first bytes (and name as a fallback). */
export function sniffContentType(name: string, bytes: Uint8Array): string {
  const head = Buffer.from(bytes.subarray(0, 8)).toString('latin1');
  if (head.startsWith('%PDF-')) return 'application/pdf';
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return 'image/jpeg';
  if (head.startsWith('\x89PNG')) return 'image/png';
  if (Buffer.from(bytes.subarray(128, 132)).toString('latin1') === 'DICM') return 'application/dicom';
  if (head.startsWith('<?xml') || head.startsWith('<')) return 'application/xml';
  if (head.startsWith('MSH')) return 'x-application/hl7-v2+er7';
  const ext = name.toLowerCase().split('.').pop();
  return ext === 'pdf' ? 'application/pdf' : 'application/octet-stream';
}
