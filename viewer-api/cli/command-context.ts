import os from 'node:os';
import { readConfig } from '../config.js';
import { createExchange, type Exchange } from '../exchange.js';
import type { AdminContext } from '../auth/admin.service.js';

/**
 * What commands that act on the exchange share: opening it for one command (closed however the
 * command ends), and the operator at the machine's shell as the actor of audited changes.
 * Kept apart from output.ts, which the facility uploader loads without the exchange.
 */
export async function withExchange<T>(fn: (exchange: Exchange) => Promise<T>): Promise<T> {
  const exchange = await createExchange(readConfig());
  try {
    return await fn(exchange);
  } finally {
    await exchange.stop();
  }
}

/** The operator at the machine's shell is the actor of command-line changes (`cli:<user>`). */
export function cliContext(command: string): AdminContext {
  let user = 'unknown';
  try {
    user = os.userInfo().username;
  } catch {
    /* no passwd entry (containers) */
  }
  return { actor: { username: `cli:${user}` }, address: null, endpoint: `cli: hakobune ${command}` };
}
