/**
 * The stored form of a message submitted through the HTTP API (kind 'spec'): the body of
 * `{m:<id>}:body` as JSON. The render worker composes MIME from it per recipient, right before
 * sending (DESIGN §2 "render late"). Bcc recipients are in the message's rcpts but never here.
 */
export interface SpecAddress {
  name?: string;
  address: string;
}

export interface SpecAttachment {
  filename: string;
  contentType?: string;
  /** The content, base64 as submitted (decoded only by the worker). */
  contentBase64: string;
  /** Content-ID for inline images referenced as cid: in the HTML. */
  cid?: string;
}

export interface MessageSpec {
  from: SpecAddress;
  to: SpecAddress[];
  cc: SpecAddress[];
  replyTo?: SpecAddress[];
  subject: string;
  text?: string;
  html?: string;
  /** Extra headers; CR/LF-free and never one of the headers Sluice writes itself. */
  headers: Record<string, string>;
  attachments: SpecAttachment[];
  /** '<id@hostname>' */
  messageId: string;
}
