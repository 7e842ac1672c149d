/**
 * `sluice bounce classify FILE...` — classifies saved bounce mails and prints one JSON object per
 * recipient found: {"file", "recipient", "status", "reason", "hardbounce", "feedbacktype"}.
 * Reads files only; needs no Redis. An unreadable file is reported on `err` and makes the exit code
 * 1, but the other files are still classified.
 */
import { readFile } from 'node:fs/promises';
import { classifyMessage } from '../bounces/index.js';

export async function runBounceClassify(files: string[], out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  let code = 0;
  for (const file of files) {
    let raw: Buffer;
    try {
      raw = await readFile(file);
    } catch (e) {
      err.write(`sluice bounce classify: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}\n`);
      code = 1;
      continue;
    }
    for (const r of await classifyMessage(raw)) {
      out.write(JSON.stringify({
        file,
        recipient: r.recipient === '' ? null : r.recipient,
        status: r.status === '' ? null : r.status,
        reason: r.reason,
        hardbounce: r.hardbounce,
        feedbacktype: r.feedbacktype,
      }) + '\n');
    }
  }
  return code;
}
