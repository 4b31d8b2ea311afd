// flask-eventlib's browser client: `log(name, data)` queues an event and posts the events of a
// tick as one batch to the blueprint's endpoint (POST /event/log). It never throws and its Promise
// never rejects: it resolves with {ok, id, status, error?} (see index.d.ts).

/** The most events in one request: the server's default EVENTLIB_MAX_BATCH. */
const MAX_BATCH = 50
/** Retries after the first attempt, for network errors, 5xx and 429 (over 15 to 31 s). */
const RETRIES = 5

let endpoint = '/event/log'
/** Events logged in this tick: {s: the event as JSON, id, r: the Promise's resolve}. */
let queue = []
/** Batches waiting for a retry timer, sent at once (as beacons) when the page is left. */
let waiting = new Set()
/** The page is being left or hidden: timers may never fire, so send with sendBeacon. */
let leaving = false

/** Set where events go, e.g. `configure({endpoint: 'https://www.example.com/event/log'})`. */
export const configure = (options) => {
  endpoint = options?.endpoint || endpoint
}

/** Log the event `name` with `data`; resolves with its result, never rejects. */
export const log = (name, data) =>
  new Promise((resolve) => {
    let id = ''
    try {
      id = uuid()
      listen()
      // Serialized now: later changes to `data` are not sent, and bad data fails this event alone.
      queue.push({ s: JSON.stringify({ event: name, data: data || {}, id }), id, r: resolve })
      if (queue.length == 1) Promise.resolve().then(flush)
    } catch (error) {
      resolve({ ok: false, id, status: 0, error: { code: 'client_error', message: '' + error } })
    }
  })

/**
 * A random UUID. crypto.randomUUID() needs a secure context (https or localhost); elsewhere a
 * blob URL ends with one the browser made ("blob:<origin>/<uuid>", File API spec).
 */
const uuid = () => {
  if (crypto.randomUUID) return crypto.randomUUID()
  const url = URL.createObjectURL(new Blob())
  URL.revokeObjectURL(url)
  return url.slice(-36)
}

/** From the first call on, listen for the page being left (replacing itself with a no-op). */
let listen = () => {
  addEventListener('pagehide', leave)
  document.addEventListener('visibilitychange', leave)
  listen = () => {}
}

const leave = (event) => {
  leaving = event.type == 'pagehide' || document.visibilityState == 'hidden'
  if (leaving) {
    flush()
    waiting.forEach((batch) => {
      waiting.delete(batch)
      clearTimeout(batch.t)
      send(batch, RETRIES)
    })
  }
}

const flush = () => {
  while (queue.length) send(queue.splice(0, MAX_BATCH), 0)
}

const send = (batch, attempt) => {
  // An array in a template joins with commas. Sent as text/plain: no CORS preflight to lose.
  const body = `{"events":[${batch.map((event) => event.s)}]}`
  let status = 0
  let wait = 0
  // In a Promise, so that even a sendBeacon or fetch that throws (a bad endpoint URL, a broken
  // polyfill) cannot throw into the page: it counts as a network error.
  new Promise((resolve) => {
    if (leaving && navigator.sendBeacon?.(endpoint, body)) return settle(batch, 0, 0, true)
    resolve(fetch(endpoint, { method: 'POST', body, keepalive: true }))
  })
    .then((response) => {
      status = response.status
      wait = response.headers.get('Retry-After') * 1000
      return response.json()
    })
    .catch(() => 0) // a network error, or an answer that is not JSON
    .then((answer) => {
      if ((!status || status > 499 || status == 429) && attempt < RETRIES) {
        // Exponential backoff with jitter, and never sooner than Retry-After says.
        const delay = Math.max(wait || 0, Math.min(30000, 1000 * 2 ** attempt) * (0.5 + Math.random() / 2))
        batch.t = setTimeout(() => waiting.delete(batch) && send(batch, attempt + 1), delay)
        waiting.add(batch)
      } else settle(batch, status, answer)
    })
    .catch(() => settle(batch, status, 0))
}

/** Resolve each event's Promise from the answer: its own error, the request's, or success. */
const settle = (batch, status, answer, beacon) =>
  batch.forEach(({ id, r }, index) => {
    const error =
      answer?.errors?.find((e) => e.index == index || e.index == null) ||
      (!beacon && (status < 200 || status > 299) && { status, code: status ? 'http_error' : 'network_error', message: status ? 'HTTP ' + status : 'no answer' })
    r(error ? { ok: false, id, status, error } : { ok: true, id, status })
  })
