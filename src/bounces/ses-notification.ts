/**
 * Amazon SES notifications forwarded by mail (SNS e-mail subscriptions): the body is one JSON
 * object, `{"notificationType":"Bounce"|"Complaint"|"Delivery", …}`, not a DSN.
 */
export interface SesRecipient {
  recipient: string;
  kind: 'bounce' | 'complaint' | 'delivery';
  status: string;
  diagnostic: string;
  action: string;
  feedbackType: string;
  permanent: boolean;
}

/** SES caps a notification at 256 KiB; anything bigger is not one. */
const MAX_JSON_CHARS = 256 * 1024;

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}
function obj(v: unknown): Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

export function parseSesNotification(text: string): SesRecipient[] {
  const start = text.indexOf('{');
  const end = text.lastIndexOf('}');
  if (start < 0 || end <= start || end - start > MAX_JSON_CHARS || !text.includes('notificationType')) return [];
  let doc: Record<string, unknown>;
  try {
    doc = obj(JSON.parse(text.slice(start, end + 1).replace(/!\r?\n/g, '').replace(/\r?\n/g, '')));
  } catch {
    return [];
  }
  // Delivered through SNS the notification is a JSON string in the envelope's "Message" field.
  if (!doc['notificationType'] && typeof doc['Message'] === 'string') {
    try {
      doc = obj(JSON.parse(doc['Message']));
    } catch {
      return [];
    }
  }
  const type = str(doc['notificationType']).toLowerCase();
  const out: SesRecipient[] = [];
  if (type === 'bounce') {
    const b = obj(doc['bounce']);
    const permanent = str(b['bounceType']).toLowerCase() === 'permanent';
    for (const r of arr(b['bouncedRecipients']).map(obj)) {
      out.push({
        recipient: str(r['emailAddress']).toLowerCase(), kind: 'bounce', status: str(r['status']),
        diagnostic: str(r['diagnosticCode']).replace(/^\s*smtp\s*;\s*/i, ''), action: str(r['action']), feedbackType: '', permanent,
      });
    }
  } else if (type === 'complaint') {
    const c = obj(doc['complaint']);
    for (const r of arr(c['complainedRecipients']).map(obj)) {
      out.push({
        recipient: str(r['emailAddress']).toLowerCase(), kind: 'complaint', status: '', diagnostic: '', action: '',
        feedbackType: str(c['complaintFeedbackType']) || 'abuse', permanent: false,
      });
    }
  } else if (type === 'delivery') {
    const d = obj(doc['delivery']);
    const response = str(d['smtpResponse']);
    for (const r of arr(d['recipients'])) {
      out.push({
        recipient: str(r).toLowerCase(), kind: 'delivery', status: /\b2\.\d\.\d+\b/.exec(response)?.[0] ?? '2.0.0',
        diagnostic: response, action: 'delivered', feedbackType: '', permanent: false,
      });
    }
  }
  return out.filter((r) => r.recipient.includes('@'));
}
