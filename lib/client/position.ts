/**
 * What a valid group position is, `{ offset, epoch }`: checked by the client before a join asks
 * to recover from one, and by the server when a join frame brings one. Here, in the client's own
 * files, because the client is served as they are (dist/client/, plain ES modules) and must not
 * import anything outside them.
 */
import type { StreamPosition } from '../layers/types.js'

const MAX_EPOCH_LENGTH = 100

/** Whether `value` is a position a join may ask to recover from. */
export function isPosition (value: unknown): value is StreamPosition {
  if (value === null || typeof value !== 'object') return false
  const { offset, epoch } = value as Record<string, unknown>
  return Number.isSafeInteger(offset) && (offset as number) >= 0 &&
    typeof epoch === 'string' && epoch.length > 0 && epoch.length <= MAX_EPOCH_LENGTH
}
