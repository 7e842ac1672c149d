/**
 * RFC 5965 abuse reports (ARF): `multipart/report; report-type=feedback-report` with a
 * message/feedback-report part, plus the reported message (or its headers).
 */
import { header, parseHeaders, walk, type MimePart } from './mime.js';
import { cleanAddress, findAddresses } from './smtp-text.js';

export interface Complaint { recipient: string; feedbackType: string }

export function isFeedbackReport(root: MimePart): boolean {
  return walk(root).some((p) => p.type === 'message/feedback-report' ||
    (p.type === 'multipart/report' && /feedback-report/i.test(p.params['report-type'] ?? '')));
}

/**
 * The complained-about recipient: Original-Rcpt-To in the report (RFC 6650), else the To of the
 * returned message; '' when the provider redacted it. One record per report.
 */
export function parseFeedbackReport(root: MimePart): Complaint[] {
  const parts = walk(root);
  const report = parts.find((p) => p.type === 'message/feedback-report');
  const fields = report ? parseHeaders(report.text.trim()) : parseHeaders('');
  const feedbackType = (header(fields, 'feedback-type') || 'abuse').toLowerCase().replace(/[^a-z-].*$/, '');

  const rcpts: string[] = [];
  for (const v of fields.fields.get('original-rcpt-to') ?? []) {
    const a = cleanAddress(v);
    if (a && !rcpts.includes(a)) rcpts.push(a);
  }
  if (rcpts.length === 0) {
    const original = parts.find((p) => p.type === 'message/rfc822' || p.type === 'text/rfc822-headers');
    const origHeaders = original
      ? (original.children[0]?.headers ?? parseHeaders(original.text.split(/\r?\n\r?\n/)[0] ?? ''))
      : undefined;
    const to = origHeaders ? header(origHeaders, 'to') : '';
    const a = findAddresses(to, 1)[0];
    if (a) rcpts.push(a);
  }
  if (rcpts.length === 0) return [{ recipient: '', feedbackType }];
  return rcpts.map((recipient) => ({ recipient, feedbackType }));
}
