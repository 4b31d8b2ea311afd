// Types of flask-eventlib's browser client: `import { log } from 'flask-eventlib'`, or the
// `yipit.event` global that the IIFE build (the Flask blueprint's /event/eventlib.js) defines.
//
// Event names and their data are typed by the global interface `YipitEventMap`, which
// `flask eventlib types > events.d.ts` fills in from the app's public events. While it is empty,
// any name and any object are accepted.

declare global {
  /**
   * Event name -> data type of the events browsers may log. Empty here: generate its members with
   * `flask eventlib types > static/events.d.ts` and include that file in your TypeScript build.
   */
  interface YipitEventMap {}

  /** `window.yipit`; the client adds `event` and keeps whatever else is there. */
  var yipit: { event: YipitEventClient; [key: string]: unknown }
}

/** The names `log()` accepts: the keys of `YipitEventMap`, or any string while it is empty. */
export type EventName = [keyof YipitEventMap] extends [never] ? string : keyof YipitEventMap & string

/** The data of the event `K`: its `YipitEventMap` entry, or any object while the map is empty. */
export type EventData<K extends string> = K extends keyof YipitEventMap ? YipitEventMap[K] : Record<string, unknown>

/** Why an event was not logged. From the server: an item of its `errors` (see the README). */
export interface EventError {
  /** The HTTP status of this refusal; 0 when no answer was read. */
  status: number
  /**
   * Machine-readable: the server's (`validation_error`, `private_event`, `unknown_event`,
   * `invalid_event`, `invalid_id`, `origin_refused`, `payload_too_large`, `too_many_events`,
   * `rate_limited`, ...), or the client's: `network_error` (no answer after the retries),
   * `http_error` (an answer that is not the endpoint's JSON), `client_error` (the data cannot be
   * serialized, e.g. a cycle or a BigInt).
   */
  code: string
  /** A sentence for developers, not end users. */
  message: string
  /** The event's position in its batch; `null` when the whole request was refused. */
  index?: number | null
  /** The event name, as the server read it. */
  event?: string | null
  /** The event id, as the server read it. */
  id?: string | null
  /** For `validation_error`: field -> messages, as the event's schema reported them. */
  details?: unknown
}

/** What a `log()` call's Promise resolves with; it never rejects. */
export interface LogResult {
  /**
   * The server accepted the event: each of its handlers will run at least once, and the workers'
   * dedup by event id keeps a retried request from running a handler that already succeeded
   * again (within `EVENTLIB_DEDUP_TTL`; see the README's delivery guarantees). Also `true`, with `status` 0, for an event sent as a beacon while the
   * page was being left: the browser took it, and its answer cannot be read.
   */
  ok: boolean
  /** The event's id, a UUID made by the client; handlers see it as `event.id`. */
  id: string
  /** The HTTP status of the request that carried the event (202 when accepted); 0 without an answer. */
  status: number
  /** Why the event was refused or lost, when `ok` is false. */
  error?: EventError
}

/** Settings of `configure()`. */
export interface Options {
  /**
   * The endpoint's URL. Default: the `data-endpoint` of the script tag that `{{ eventlib_script() }}`
   * renders, else `/event/log`. Another origin must be listed in its `EVENTLIB_ALLOWED_ORIGINS`.
   */
  endpoint?: string
}

/**
 * Log the event `name` with `data`, like the server's `log()`: calls made in the same tick are
 * posted together as one request, network errors, 5xx and 429 are retried (with the same event
 * id, so handlers never run twice), and events still queued when the page is left are sent as a
 * beacon. `data` is serialized at once: later changes to it are not sent.
 *
 * Never throws, and the Promise never rejects: it resolves with the event's {@link LogResult},
 * so a page may ignore it, or show the server's validation messages.
 *
 * @example
 * // Fire and forget:
 * yipit.event.log('deals.DealClick', { deal_id: 7 })
 *
 * @example
 * // Show what the server refused (the event's schema said why):
 * const result = await yipit.event.log('accounts.SignedUp', { email })
 * if (!result.ok && result.error?.code === 'validation_error') {
 *   showErrors(result.error.details) // e.g. { email: ['Not a valid email address.'] }
 * }
 *
 * @example
 * // As an ES module:
 * import { log } from 'flask-eventlib'
 * log('deals.DealClick', { deal_id: 7 }).then((result) => result.ok || console.warn(result.error))
 */
export function log<K extends EventName>(
  name: K,
  ...data: {} extends EventData<K> ? [data?: EventData<K>] : [data: EventData<K>]
): Promise<LogResult>

/**
 * Change the client's settings, e.g. send events to another host.
 *
 * @example
 * yipit.event.configure({ endpoint: 'https://www.example.com/event/log' })
 */
export function configure(options: Options): void

/** The `yipit.event` object of the IIFE build. */
export interface YipitEventClient {
  log: typeof log
  configure: typeof configure
}
