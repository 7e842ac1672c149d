/**
 * Does a POST body ask to unsubscribe? RFC 8058 §3.1: the mail client POSTs `List-Unsubscribe=One-Click`
 * as application/x-www-form-urlencoded (Gmail sends exactly that body); some clients send the same
 * field as multipart/form-data; our own page's form posts the same field. Anything else is refused,
 * so a stray POST of some other form never unsubscribes anyone.
 */
export function isOneClickBody(contentType: string, body: Buffer): boolean {
  const type = contentType.split(';')[0]?.trim().toLowerCase() ?? '';
  if (type === 'multipart/form-data') return multipartHasOneClick(contentType, body.toString('latin1'));
  // Missing or text/plain content types are read as the urlencoded body RFC 8058 specifies.
  if (type === '' || type === 'application/x-www-form-urlencoded' || type === 'text/plain') {
    return new URLSearchParams(body.toString('utf8').trim()).getAll('List-Unsubscribe').includes('One-Click');
  }
  return false;
}

function multipartHasOneClick(contentType: string, body: string): boolean {
  const m = /boundary=(?:"([^"]{1,70})"|([^;\s]{1,70}))/i.exec(contentType);
  const boundary = m?.[1] ?? m?.[2];
  if (!boundary) return false;
  for (const part of body.split(`--${boundary}`)) {
    const split = part.indexOf('\r\n\r\n');
    const sep = split === -1 ? part.indexOf('\n\n') : split;
    if (sep === -1) continue;
    const head = part.slice(0, sep);
    const value = part.slice(sep).trim();
    if (/content-disposition:\s*form-data;[^\r\n]*\bname="?List-Unsubscribe"?(?:;|\s|$)/i.test(head) && value === 'One-Click') return true;
  }
  return false;
}
