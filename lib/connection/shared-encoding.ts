/**
 * One encoding for every member a text goes to. A group message is, for most consumers, the same
 * text for every local member, sent one member after the other within one `groupSend()`: its
 * bytes (a WebSocket frame, an event-stream chunk) are built for the first and written as they are
 * to the others, as a hand-written broadcast does. Only the last text is remembered, and only up
 * to 64 KiB: keeping a large one alive between sends costs memory.
 */

const MAX_SHARED_TEXT = 64 * 1024

/** `encode`, remembering its last result: undefined for a text too large to keep. */
export function encodedOnce<T> (encode: (text: string) => T): (text: string) => T | undefined {
  let lastText: string | undefined
  let last: T | undefined
  return (text: string): T | undefined => {
    if (text.length > MAX_SHARED_TEXT) return undefined
    if (text !== lastText) {
      last = encode(text)
      lastText = text
    }
    return last
  }
}
