import { BaseChannelLayer, type BaseChannelLayerOptions } from './base.js'

export type InMemoryChannelLayerOptions = BaseChannelLayerOptions

/**
 * The layer for a single process, and the reference behaviour every other layer is tested against:
 * messages are copied, channels fill up and expire exactly as they would across processes. The
 * base class already keeps everything locally, so there is nothing to add.
 */
export class InMemoryChannelLayer extends BaseChannelLayer {
  constructor (options: InMemoryChannelLayerOptions = {}) {
    super(options)
  }
}
