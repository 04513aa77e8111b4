import fsp from 'node:fs/promises';
import path from 'node:path';
import { dataTypeFolder } from '../ssmix2/filename.js';
import { compareDirs } from './order.js';

/**
 * The SS-MIX2 transaction storage (docs/ssmix2.md "Transaction storage"): some systems log every
 * write to the standardized storage as a file `TR_YYYYMMDDHHMMSSFFF_nnnnn.DAT` whose header line
 * reads `#SSMIX,2.00,<facility>,<pid>,<date>,<type>,<orderNo>,INS|DEL,<dept>,<ts>`.
 * The uploader reads the files written since its last run to learn which data-type folders
 * changed, and rescans only those.
 */

export interface FeedRecord {
  version: string;
  facility: string;
  patientId: string;
  careDate: string | null;
  dataType: string;
  orderNo: string;
  action: 'INS' | 'DEL';
  department: string | null;
  timestamp: string;
}

export class FeedError extends Error {
  override name = 'FeedError';
}

/** `TR_` + 17-digit timestamp + `_` + sequence + `.DAT`; names sort in write order. */
export const FEED_FILE_NAME = /^TR_\d{17}_\d{1,10}\.DAT$/i;

/** Parses one header line (tolerant of spaces around fields, case of INS/DEL, trailing fields). */
export function parseFeedHeader(line: string, where: string): FeedRecord {
  const fields = line.trim().split(',').map((f) => f.trim());
  const bad = (what: string) =>
    new FeedError(`${where}: ${what} in the transaction header "${line.trim().slice(0, 120)}" (expected #SSMIX,2.00,<facility>,<pid>,<date>,<type>,<orderNo>,INS|DEL,<dept>,<ts>)`);
  if (fields[0]?.toUpperCase() !== '#SSMIX') throw bad('no #SSMIX marker');
  if (fields.length < 10) throw bad(`${fields.length} fields, 10 needed`);
  const [, version, facility, patientId, date, dataType, orderNo, action, dept, ts] = fields as string[] as [
    string, string, string, string, string, string, string, string, string, string,
  ];
  if (!/^\d+\.\d+$/.test(version)) throw bad(`version "${version}"`);
  const careDate = date === '-' || date === '' ? null : date;
  if (careDate !== null && !/^\d{8}$/.test(careDate)) throw bad(`care date "${date}"`);
  const act = action.toUpperCase();
  if (act !== 'INS' && act !== 'DEL') throw bad(`action "${action}" (INS or DEL)`);
  if (!/^\d{8,17}$/.test(ts)) throw bad(`timestamp "${ts}"`);
  if (!/^[^\s_/\\\0]+$/.test(patientId)) throw bad(`patient ID "${patientId}"`);
  if (!/^[A-Z]{3}(-\d{2})?$/.test(dataType)) throw bad(`data type "${dataType}"`);
  return {
    version,
    facility,
    patientId,
    careDate,
    dataType,
    orderNo,
    action: act,
    department: dept === '-' || dept === '' ? null : dept,
    timestamp: ts,
  };
}

/**
 * Parses the header(s) of one feed file. The body after the header is the message itself
 * (ISO-2022-JP): only lines that start with `#SSMIX` are read, as latin1 so no byte is misread.
 */
export function parseFeedFile(bytes: Buffer, fileName: string): FeedRecord[] {
  const text = bytes.toString('latin1');
  const records: FeedRecord[] = [];
  const lines = text.split(/\r\n|\r|\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (/^\s*#SSMIX/i.test(line)) records.push(parseFeedHeader(line, `${fileName} line ${i + 1}`));
  }
  if (records.length === 0) throw new FeedError(`${fileName}: no #SSMIX transaction header: not a transaction-storage file`);
  return records;
}

export interface FeedChanges {
  /** Data-type folders (relative to the standardized-storage root) named since `after`, in walk order. */
  folders: string[];
  /** The last feed file read: the position to record for the next run. */
  lastFile: string | null;
  files: number;
  records: number;
  /** A record named a patient whose folder cannot be derived (ID under 6 characters): a full scan is needed. */
  needsFullScan: string | null;
}

/** Lists the feed folder's TR files in order (names only). Other files are reported in `ignored`. */
export async function listFeedFiles(dir: string): Promise<{ files: string[]; ignored: string[] }> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new FeedError(`cannot read the change feed folder ${dir}: ${err.code ?? err.message}`);
  }
  const files = names.filter((n) => FEED_FILE_NAME.test(n)).sort((a, b) => (a.toUpperCase() < b.toUpperCase() ? -1 : a.toUpperCase() > b.toUpperCase() ? 1 : 0));
  return { files, ignored: names.filter((n) => !FEED_FILE_NAME.test(n)) };
}

/** Reads the feed files after `after` (a TR file name from the last run) and names the changed folders. */
export async function readFeedChanges(dir: string, after: string | null): Promise<FeedChanges> {
  const { files } = await listFeedFiles(dir);
  const fresh = after === null ? files : files.filter((f) => f.toUpperCase() > after.toUpperCase());
  const folders = new Set<string>();
  let records = 0;
  let needsFullScan: string | null = null;
  for (const f of fresh) {
    let bytes: Buffer;
    try {
      bytes = await fsp.readFile(path.join(dir, f));
    } catch (e) {
      throw new FeedError(`cannot read the change feed file ${f}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    for (const r of parseFeedFile(bytes, f)) {
      records++;
      const folder = dataTypeFolder(r.patientId, r.careDate, r.dataType);
      if (folder === null) needsFullScan ??= `${f} names patient "${r.patientId}", whose folder cannot be derived`;
      else folders.add(folder);
    }
  }
  return {
    folders: [...folders].sort(compareDirs),
    lastFile: fresh.length > 0 ? fresh[fresh.length - 1]! : after,
    files: fresh.length,
    records,
    needsFullScan,
  };
}
