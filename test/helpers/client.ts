/** What the tests of `ChannelsClient` share. */
import { ChannelsClientError } from '../../lib/client/index.js'

/** The ChannelsClientError `promise` rejects with; anything else, or no rejection, fails the test. */
export async function clientRejection (promise: Promise<unknown>): Promise<ChannelsClientError> {
  try {
    await promise
  } catch (err) {
    if (err instanceof ChannelsClientError) return err
    throw err
  }
  throw new Error('expected a rejection')
}
