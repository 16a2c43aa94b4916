/**
 * The live stream of each group with history, as this process hears it: the offsets tell when
 * messages were missed, and the group's history gives them back.
 *
 * A group message with history is published in the same step that gives it its offset, so one
 * subscription hears a group's messages in offset order. A process misses some only when its
 * subscription is gone for a while: its connection to the backend dropped, or (Redis Cluster) the
 * group's hash slot moved to another master, which drops the subscriptions to it until they are
 * made again there. So:
 *
 * - a live message whose offset is more than one past the last one heard reveals a gap: it waits,
 *   with every later one, while the missed ones are read from the history and handed on first;
 * - after an outage, each group is read from the last offset heard, without waiting for its next
 *   message (`recover()`);
 * - a live message at or below the last offset handed on, among those a read handed on, is a copy
 *   of one of them (the read got it before its live copy came, or it is late from a connection to
 *   a master that gave the slot away, whose later messages revealed a gap): it is dropped, so
 *   nothing comes twice. Below the last offset and not read back, it is no copy: the group's
 *   offsets went back (below), and it is handed on.
 *
 * What the history no longer holds (trimmed by its `size` or `ttl`) is lost, and logged. A group's
 * position where this process starts hearing it is its first live message, or a join's position
 * (a baseline: live messages from before the join may still arrive, and are handed on). A Redis
 * that lost its last writes (restarted from an older snapshot, or a replica that was behind took
 * over) keeps its epoch and gives their offsets out again: the read after the outage finds the
 * group's position lower than this process' and goes on from there, and so does a live message
 * below the last offset that no read handed on (on Redis Cluster a master can restart without
 * this process seeing an outage). Other processes may have sent past this process' offset again
 * before it reads: the read after the outage then finds the message at its last offset written
 * anew (its stamp, `GroupStamp`, is not the one heard), and hands the group on from that offset.
 * Without an outage (a Cluster master paused past its failover publishes a write it then loses,
 * while this process misses the new master's write of that offset), the next live message tells:
 * it carries the stamp of the message kept before it, which is not the one heard.
 * Either way members see the offset go back (`GroupsConsumer` has its client re-join, which then
 * reports the gap), and the group gets a new epoch first.
 */
import type { Delivery, LayerLogger, LayerMessage, StreamPosition } from '../types.js'
import type { GroupStamp, HistoryRead } from './transport.js'

/** Reads of one gap, in all, before what it holds is given up for lost; the first retry after this. */
const READ_TRIES = 3
const READ_RETRY_MS = 1000

export interface GapReader {
  /** The size of the history this process keeps for the group (undefined without): only then are gaps read back. */
  historySize (group: string): number | undefined
  /** The group's stored messages after `since` (oldest first, at most `limit`), and its position. */
  read (group: string, since: StreamPosition, limit: number): Promise<HistoryRead>
  /** A stored payload's message; undefined when it cannot be decoded here (reported already). */
  decode (payload: Buffer, group: string, offset: number): LayerMessage | undefined
  /**
   * Hands a group message on to the local members, in order; one read back is not refused for
   * capacity (as a join's catch-up is not): the history bounds it.
   */
  deliver (group: string, message: LayerMessage, info: Delivery, readBack: boolean): void
  /**
   * The group's offsets went back in `epoch`: it is given a new one, so that members whose
   * position is in `epoch` recover from it no more (their next join is not recovered).
   */
  renewEpoch (group: string, epoch: string): Promise<void>
  /** Whether the backend is reachable: a gap whose reads failed while it was not waits for it. */
  up: () => boolean
  log: () => LayerLogger
}

interface Stream {
  epoch: string
  /** The last offset handed on (or, with `baseline`, the position of a join). */
  offset: number
  baseline: boolean
  /** The stamp of the live message at `offset`; undefined when none was heard there (a baseline, a read, a move). */
  stamp?: GroupStamp
  /** Live messages waiting for a read of the history to be handed on first, with their stamp and their predecessor's. */
  waiting: Array<[LayerMessage, Delivery, GroupStamp | undefined, GroupStamp | undefined]> | undefined
  /** A gap (or the read after an outage) whose reads failed while the backend was gone: read once it is back (`recover()`). */
  unread?: { before: number, limit: number }
  /** An outage ended while a gap was being read: once that is done, read what it published. */
  recoverAfter?: boolean
  /** The lowest and highest offsets reads handed on in this epoch: a live message among them may be a copy. */
  readBack?: [number, number]
}

export class StreamGaps {
  readonly #streams = new Map<string, Stream>()
  readonly #reader: GapReader

  constructor (reader: GapReader) {
    this.#reader = reader
  }

  /**
   * A live message of the group, with its stamp when it has history, and the stamp of the message
   * kept at the offset before it when it was written (`previous`; undefined when none was kept).
   */
  arrive (group: string, message: LayerMessage, info: Delivery, stamp?: GroupStamp, previous?: GroupStamp): void {
    const stream = this.#streams.get(group)
    if (stream?.waiting !== undefined) stream.waiting.push([message, info, stamp, previous])
    else this.#pass(group, stream, message, info, stamp, previous)
  }

  /** A join of the group read its position: a gap after it can be told from then on. */
  joined (group: string, position: StreamPosition): void {
    const stream = this.#streams.get(group)
    if (stream === undefined || (stream.epoch !== position.epoch && stream.waiting === undefined)) {
      this.#streams.set(group, { epoch: position.epoch, offset: position.offset, baseline: true, waiting: undefined })
    }
  }

  /**
   * After an outage: reads what each group published since the last offset heard, after the gap
   * its process was reading (or had to leave) when the backend went, if any.
   */
  async recover (): Promise<void> {
    await Promise.all([...this.#streams].map(async ([group, stream]) => {
      if (this.#reader.historySize(group) === undefined) return
      const unread = stream.unread
      if (unread !== undefined) {
        // After the gap (or the read after the last outage) that had to wait, the read after this one.
        stream.unread = undefined
        stream.recoverAfter = unread.before !== Infinity
        await this.#fill(group, stream, unread.before, unread.limit)
      } else {
        stream.recoverAfter = true
        if (stream.waiting === undefined) await this.#recoverNow(group, stream)
      }
    }))
  }

  /** The process stopped hearing the group. */
  forget (group: string): void {
    this.#streams.delete(group)
  }

  clear (): void {
    this.#streams.clear()
  }

  #pass (group: string, stream: Stream | undefined, message: LayerMessage, info: Delivery, stamp: GroupStamp | undefined, previous: GroupStamp | undefined): void {
    const { offset, epoch } = info
    // A presence announcement, or a group without history: nothing to go by.
    if (offset === undefined || epoch === undefined) return this.#reader.deliver(group, message, info, false)
    if (stream === undefined || stream.epoch !== epoch) {
      // A new epoch past the stream's offset may be a renewal (a process noticed a lost write),
      // which keeps the offsets: what this process missed before it, and a write it heard that was
      // lost, are read across it first (the reads find out which it is).
      const size = stream !== undefined && offset > stream.offset ? this.#reader.historySize(group) : undefined
      if (stream !== undefined && size !== undefined && (offset > stream.offset + 1 || overwritten(stream, previous))) {
        stream.waiting = [[message, info, stamp, previous]]
        void this.#fill(group, stream, offset, Math.max(1, Math.min(offset - stream.offset - 1, size)))
        return
      }
      this.#streams.set(group, { epoch, offset, baseline: false, stamp, waiting: undefined })
      return this.#reader.deliver(group, message, info, false)
    }
    if (offset <= stream.offset) {
      // Sent before the join whose position this is: handed on.
      if (stream.baseline) return this.#reader.deliver(group, message, info, false)
      const read = stream.readBack
      if (read !== undefined && offset >= read[0] && offset <= read[1]) return // a copy
      this.#wentBack(group, stream, offset)
      stream.stamp = stamp
      return this.#reader.deliver(group, message, info, false)
    }
    const size = offset > stream.offset + 1 ? this.#reader.historySize(group) : undefined
    if (size !== undefined) {
      stream.waiting = [[message, info, stamp, previous]]
      void this.#fill(group, stream, offset, Math.min(offset - stream.offset - 1, size))
      return
    }
    if (offset === stream.offset + 1 && overwritten(stream, previous)) {
      // The read finds the message at the stream's offset written again (`writtenAgain`).
      stream.waiting = [[message, info, stamp, previous]]
      void this.#fill(group, stream, offset, 1)
      return
    }
    stream.offset = offset
    stream.stamp = stamp
    stream.baseline = false
    this.#reader.deliver(group, message, info, false)
  }

  /**
   * Reads the history after the stream's offset (below `before`, for a gap), hands it on, then
   * what waited. What a read did not bring is lost here, and the stream goes on after it. A read
   * that fails is tried again, `READ_TRIES` times in all, the group's live messages still waiting;
   * if the backend is gone by then, the read waits for it (`recover()`). So does the read after an
   * outage; if it fails for good with the backend up, the group's next message shows the gap.
   */
  async #fill (group: string, stream: Stream, before: number, limit: number, tries = 1): Promise<void> {
    if (this.#streams.get(group) !== stream) return
    const after = stream.offset
    const reader = this.#reader
    const outage = before === Infinity
    let missing = outage ? 0 : before - after - 1
    let read: Awaited<ReturnType<GapReader['read']>> | undefined
    try {
      read = await reader.read(group, { epoch: stream.epoch, offset: after }, limit)
    } catch (err) {
      if (this.#streams.get(group) !== stream) return
      const again = tries < READ_TRIES
      reader.log().warn({ err, group, tries }, `could not read back the group messages this process missed${again ? '; trying again' : ''}`)
      if (again) {
        setTimeout(() => { void this.#fill(group, stream, before, limit, tries + 1) }, READ_RETRY_MS * tries).unref()
        return
      }
      if (!reader.up()) {
        // Gone with the backend: read once it is back, the group's later messages still waiting.
        stream.unread = { before, limit }
        return
      }
      if (!outage) reader.log().warn({ group, missing, after }, 'group messages this process missed could not be read back: lost here')
      missing = 0
    }
    if (this.#streams.get(group) !== stream) return
    if (read !== undefined && writtenAgain(stream, read)) {
      // The message at the last offset heard is not the one heard: the backend lost its last
      // writes, and the offset was given again since (found after an outage, by a gap's read, or
      // by the live message after it, which carries the stamp kept before it). Read from there, so
      // that members see the offset go back, but give the group its new epoch first: a member
      // that re-joins from its position then is not told it recovered.
      reader.log().warn({ group, offset: after }, 'the group\'s message at the last offset this process heard was written again (Redis lost its last writes); following it, in a new epoch')
      read = await reader.read(group, { epoch: stream.epoch, offset: after - 1 }, limit + 1).catch(() => undefined)
      await reader.renewEpoch(group, stream.epoch)
      if (this.#streams.get(group) !== stream) return
      stream.offset = after - 1
      stream.stamp = undefined
      stream.readBack = undefined
    }
    if (read !== undefined) {
      // Read across a renewal, whose kept messages keep their offsets: handed on as this stream's
      // (its next live message brings the new epoch).
      const { stored } = read
      const position = read.followedRenewal === true ? { epoch: stream.epoch, offset: read.position.offset } : read.position
      // After an outage in which the backend lost the group's history, its new epoch is read from
      // the start; for a gap, another epoch holds nothing of it.
      if (position.epoch !== stream.epoch && outage) {
        stream.epoch = position.epoch
        stream.offset = 0
        stream.stamp = undefined
        stream.readBack = undefined
      }
      // A new epoch that is no renewal (a backend that lost the group's history): what this
      // process missed of the old one went with it, as the new epoch tells its members.
      if (position.epoch !== stream.epoch) missing = 0
      if (position.epoch === stream.epoch) {
        if (outage) missing = position.offset - stream.offset
        for (const [offset, payload] of stored) {
          if (offset <= stream.offset || offset >= before) continue
          // In the history either way: one that cannot be decoded here is not missing from it.
          missing--
          const message = reader.decode(payload, group, offset)
          if (message === undefined) continue
          stream.offset = offset
          stream.stamp = undefined
          const read = stream.readBack
          stream.readBack = read === undefined ? [offset, offset] : [Math.min(read[0], offset), offset]
          reader.deliver(group, message, { group, offset, epoch: stream.epoch }, true)
        }
        // Below where it was, the stream started again lower (see the file comment).
        if (outage) {
          if (position.offset < stream.offset) this.#wentBack(group, stream, position.offset)
          if (position.offset !== stream.offset) stream.stamp = undefined
          stream.offset = position.offset
        }
      }
    }
    if (!outage && stream.offset < before - 1) {
      stream.offset = before - 1
      stream.stamp = undefined
    }
    stream.baseline = false
    if (missing > 0) reader.log().warn({ group, missing, after }, 'group messages this process missed are no longer in the group\'s history: lost here')
    this.#drain(group, stream)
    if (stream.recoverAfter === true && stream.waiting === undefined) await this.#recoverNow(group, stream)
  }

  /** The group's offsets went back to `offset`: followed from there, and the group gets a new epoch. */
  #wentBack (group: string, stream: Stream, offset: number): void {
    this.#reader.log().warn({ group, offset, heard: stream.offset }, 'the group\'s offsets went back (Redis lost its last writes); following them, in a new epoch')
    stream.offset = offset
    stream.stamp = undefined
    stream.readBack = undefined
    void this.#reader.renewEpoch(group, stream.epoch)
  }

  /** The read after an outage, for a stream no read is under way for. */
  async #recoverNow (group: string, stream: Stream): Promise<void> {
    const size = this.#reader.historySize(group)
    stream.recoverAfter = false
    if (size === undefined) return
    stream.waiting = []
    await this.#fill(group, stream, Infinity, size)
  }

  #drain (group: string, stream: Stream): void {
    const waiting = stream.waiting ?? []
    stream.waiting = undefined
    for (let i = 0; i < waiting.length; i++) {
      // A later gap: what is left waits for that read too.
      const later = waitingOf(stream)
      if (later !== undefined) {
        for (let j = i; j < waiting.length; j++) later.push(waiting[j])
        return
      }
      this.#pass(group, stream, waiting[i][0], waiting[i][1], waiting[i][2], waiting[i][3])
    }
  }
}

/** Whether the message at the stream's offset was written again since it was heard (its stamp differs). */
function writtenAgain (stream: Stream, read: HistoryRead): boolean {
  return (read.position.epoch === stream.epoch || read.followedRenewal === true) && stream.stamp !== undefined &&
    read.stampAtSince !== undefined && read.stampAtSince !== stream.stamp
}

/**
 * Whether the message before a live one, as the backend kept it (`previous`, its stamp), is not
 * the one this process heard at the stream's offset: both stamps known, and different.
 */
function overwritten (stream: Stream, previous: GroupStamp | undefined): boolean {
  return previous !== undefined && stream.stamp !== undefined && previous !== stream.stamp
}

/** Read anew: a pass may have started a read (TypeScript keeps the narrowing across calls). */
function waitingOf (stream: Stream): Stream['waiting'] {
  return stream.waiting
}
