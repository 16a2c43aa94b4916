/**
 * The socket as the connection's lifecycle sees it: what it needs of it (ws' WebSocket has it; a
 * test fakes it, and another transport could adapt to it), and the data it brings.
 */
import type { RawData } from 'ws'
import type { WritableSocket } from './outbound.js'
import type { Readable } from './flow-control.js'

export interface ConnectionSocket extends WritableSocket, Readable {
  on (event: 'message', listener: (data: RawData, binary: boolean) => void): unknown
  on (event: 'pong', listener: () => void): unknown
  on (event: 'error', listener: (err: Error & { code?: string }) => void): unknown
  on (event: 'close', listener: (code: number) => void): unknown
  close (code: number, reason: string): void
  terminate (): void
  ping (): void
}

/** A client frame's data as one Buffer, whatever form ws gave it in. */
export function toBuffer (data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (Array.isArray(data)) return Buffer.concat(data)
  return Buffer.from(data)
}
