/**
 * A URL with its user and password replaced by [redacted], for logs and `sluice config show`. The
 * credentials end at the authority's last '@' (a password may hold '@': redis://:pa@ss@host), not
 * its first, which printed the password's tail.
 */
export function redactUrlCredentials(url: string): string {
  return url.replace(/\/\/[^/?#]*@/, '//[redacted]@');
}
