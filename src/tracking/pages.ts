/**
 * The few pages a recipient sees: plain HTML, no script, readable with a screen reader and without
 * styles. Every value shown is escaped.
 */
const escapeHtml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${escapeHtml(title)}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#111}button{font:inherit;padding:.6rem 1.2rem;cursor:pointer}</style>
</head>
<body>
<main>
<h1>${escapeHtml(title)}</h1>
${body}
</main>
</body>
</html>
`;
}

/** Who the pages say sends the mail: the message's sender, unknown once its record is purged. */
const sender = (from: string | null): string => (from === null ? 'this sender' : `<strong>${escapeHtml(from)}</strong>`);

/** The confirmation page of GET /u/<token>: the button POSTs the RFC 8058 field to the same URL. */
export function unsubscribeFormPage(address: string, from: string | null): string {
  return page(
    'Unsubscribe',
    `<p>Stop mail from ${sender(from)} to <strong>${escapeHtml(address)}</strong>?</p>
<form method="post">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button>
</form>`,
  );
}

export function unsubscribedPage(address: string, from: string | null): string {
  return page(
    'You are unsubscribed',
    `<p role="status"><strong>${escapeHtml(address)}</strong> will no longer receive mail from ${sender(from)}.</p>`,
  );
}

export function invalidLinkPage(): string {
  return page('This link is not valid', '<p>The link is incomplete, has expired or was changed. Please use the link from a recent message.</p>');
}

export function badRequestPage(): string {
  return page('The request was not understood', '<p>Please use the button on the unsubscribe page.</p>');
}

export const NOT_FOUND_TEXT = 'Not found\n';
