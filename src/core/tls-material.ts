/** A server's STARTTLS key and certificate (PEM), as ingress/tls.ts loadOrCreateTls gives them to the SMTP servers. */
export interface TlsMaterial {
  readonly key: Buffer;
  readonly cert: Buffer;
}
