/**
 * Joins and leaves of one membership (a group and a channel) take effect in call order, as on the
 * in-memory layer, where each is one synchronous step. Here each is several backend round trips
 * (a fence, a script, a subscription), so two under way at once could land in either order: a
 * leave not awaited before a join undid the join once its own round trip was back, and a join not
 * awaited before the channel's end added the member after the end had left its groups (a
 * membership, and a presence entry, that no one would remove). So each waits for the one asked
 * before it; memberships of other groups, or of other channels, go on side by side. A channel's
 * end (`discardChannel`) waits for all of its memberships' turns, and those asked after it for it.
 */
export class MembershipTurns {
  // group + channel → the last join or leave asked for that membership, while under way.
  readonly #last = new Map<string, Promise<unknown>>()
  // channel → its joins and leaves under way (what its end waits for), and its end, while under way.
  readonly #ofChannel = new Map<string, Set<Promise<unknown>>>()
  readonly #ending = new Map<string, Promise<unknown>>()

  /** Runs `step` once the join or leave asked before it for this membership (or its channel's end) is over. */
  async take<T> (group: string, channel: string, step: () => Promise<T>): Promise<T> {
    const key = `${group}\n${channel}`
    const last = this.#last.get(key)
    const ending = this.#ending.get(channel)
    const before = ending === undefined ? last : last === undefined ? ending : Promise.all([last.then(settled, settled), ending])
    const mine = before === undefined ? step() : before.then(settled, settled).then(step)
    this.#last.set(key, mine)
    let turns = this.#ofChannel.get(channel)
    if (turns === undefined) this.#ofChannel.set(channel, turns = new Set())
    turns.add(mine)
    try {
      return await mine
    } finally {
      if (this.#last.get(key) === mine) this.#last.delete(key)
      turns.delete(mine)
      if (turns.size === 0 && this.#ofChannel.get(channel) === turns) this.#ofChannel.delete(channel)
    }
  }

  /** Runs `end` once every join and leave asked before it for the channel is over. */
  async end (channel: string, end: () => Promise<void>): Promise<void> {
    const before = [...this.#ofChannel.get(channel) ?? []].map(turn => turn.then(settled, settled))
    const earlier = this.#ending.get(channel)
    if (earlier !== undefined) before.push(earlier.then(settled, settled))
    const mine = before.length === 0 ? end() : Promise.all(before).then(end)
    this.#ending.set(channel, mine)
    try {
      await mine
    } finally {
      if (this.#ending.get(channel) === mine) this.#ending.delete(channel)
    }
  }
}

function settled (): void {}
