/** WebSocket close codes and reasons (RFC 6455 §7.4), as the connection sends and reports them. */

/** Codes an endpoint may send in a close frame. */
export function isSendableCloseCode (code: number): boolean {
  return Number.isInteger(code) &&
    ((code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
      (code >= 3000 && code <= 4999))
}

/** Close reasons are limited to 123 bytes of UTF-8; cut on a character boundary. */
export function fitCloseReason (reason: string): string {
  if (Buffer.byteLength(reason) <= 123) return reason
  let cut = reason.slice(0, 123)
  while (Buffer.byteLength(cut) > 120) cut = cut.slice(0, -1)
  return cut + '...'
}

/** The close code ws sends for each of its protocol errors; other errors mean the connection is lost. */
export function protocolErrorCloseCode (code: string | undefined): number {
  if (code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') return 1009
  if (code === 'WS_ERR_INVALID_UTF8') return 1007
  if (code?.startsWith('WS_ERR_') === true) return 1002
  return 1006 // a network error: the connection is simply gone
}
