// Unit tests of js/eventlib.js in a fake browser (node --test js/test/). The real browser tests are
// tests/e2e/ (Playwright, against the built file and a real server and worker).
import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, mock, test } from 'node:test'
import { FakeBrowser, load, settle } from './env.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

let browser
let uninstall
let unhandled

const onUnhandled = (reason) => unhandled.push(reason)

beforeEach(() => {
  browser = new FakeBrowser()
  uninstall = browser.install()
  unhandled = []
  process.on('unhandledRejection', onUnhandled)
  mock.timers.enable({ apis: ['setTimeout'] })
  mock.method(Math, 'random', () => 0.5)
})

afterEach(async () => {
  await settle()
  process.off('unhandledRejection', onUnhandled)
  mock.timers.reset()
  mock.restoreAll()
  uninstall()
  assert.deepEqual(unhandled, [], 'no unhandled rejection')
})

/** Run the timers due in `ms` milliseconds, letting the promises they start settle. */
const advance = async (ms) => {
  mock.timers.tick(ms)
  await settle()
}

describe('batching', () => {
  test('calls made in the same tick are sent together, as one request', async () => {
    const { log } = await load()
    const results = Promise.all([log('web.PageView', { page: 'a' }), log('web.Search', { query: 'b' }), log('web.X')])
    assert.equal(browser.requests.length, 0, 'nothing is sent before the tick ends')
    const [a, b, c] = await results
    assert.equal(browser.requests.length, 1)
    const { url, body, init } = browser.requests[0]
    assert.equal(url, '/event/log')
    assert.equal(init.method, 'POST')
    assert.equal(init.keepalive, true, 'keepalive: it outlives the page')
    assert.equal(typeof init.body, 'string', 'a string body is sent as text/plain: no preflight')
    assert.equal(init.headers, undefined)
    assert.deepEqual(body, {
      events: [
        { event: 'web.PageView', data: { page: 'a' }, id: a.id },
        { event: 'web.Search', data: { query: 'b' }, id: b.id },
        { event: 'web.X', data: {}, id: c.id },
      ],
    })
    for (const result of [a, b, c]) assert.deepEqual(result, { ok: true, id: result.id, status: 202 })
  })

  test('calls of the next tick make the next request', async () => {
    const { log } = await load()
    await log('a.A')
    await log('a.B')
    assert.deepEqual(
      browser.requests.map((r) => r.body.events.map((e) => e.event)),
      [['a.A'], ['a.B']],
    )
  })

  test('more than 50 events in a tick are split into requests of 50 (the server refuses more)', async () => {
    const { log } = await load()
    const results = await Promise.all(Array.from({ length: 120 }, (_, i) => log('a.A', { i })))
    assert.deepEqual(
      browser.requests.map((r) => r.body.events.length),
      [50, 50, 20],
    )
    assert.deepEqual(
      browser.requests.flatMap((r) => r.body.events.map((e) => e.data.i)),
      results.map((_, i) => i),
    )
    assert.ok(results.every((r) => r.ok))
  })

  test('data is serialized when logged: later changes are not sent', async () => {
    const { log } = await load()
    const data = { n: 1 }
    const sent = log('a.A', data)
    data.n = 2
    await sent
    assert.deepEqual(browser.requests[0].body.events[0].data, { n: 1 })
  })
})

describe('ids', () => {
  test('every event gets a UUID from crypto.randomUUID()', async () => {
    const { log } = await load()
    const results = await Promise.all([log('a.A'), log('a.A')])
    assert.match(results[0].id, UUID)
    assert.notEqual(results[0].id, results[1].id)
  })

  test('without crypto.randomUUID() (an http:// page), a blob URL gives the UUID', async () => {
    Object.defineProperty(crypto, 'randomUUID', { value: undefined, configurable: true })
    try {
      const { log } = await load()
      const results = await Promise.all(Array.from({ length: 20 }, () => log('a.A')))
      const ids = results.map((r) => r.id)
      for (const id of ids) assert.match(id, UUID)
      assert.equal(new Set(ids).size, 20)
      assert.deepEqual(
        browser.requests[0].body.events.map((e) => e.id),
        ids,
      )
    } finally {
      delete crypto.randomUUID
    }
    assert.equal(typeof crypto.randomUUID, 'function', 'the test restored crypto.randomUUID')
  })
})

describe('results', () => {
  test("each event of a batch gets its own result: the server's error for it, or success", async () => {
    const { log } = await load()
    const details = { stars: ['Must be greater than or equal to 1 and less than or equal to 5.'] }
    const refusal = {
      status: 400,
      code: 'validation_error',
      message: 'The data of web.Rating is invalid.',
      index: 1,
      event: 'web.Rating',
      id: null,
      details,
    }
    browser.answer({ status: 202, json: { accepted: ['x'], errors: [refusal] } })
    const [good, bad] = await Promise.all([log('web.PageView', { page: 'a' }), log('web.Rating', { stars: 9 })])
    assert.deepEqual(good, { ok: true, id: good.id, status: 202 })
    assert.deepEqual(bad, { ok: false, id: bad.id, status: 202, error: refusal })
  })

  test('a refused request (4xx, index null) fails every event, and is not retried', async () => {
    const { log } = await load()
    const refusal = { status: 403, code: 'origin_refused', message: 'No.', index: null, event: null, id: null }
    browser.answer({ status: 403, json: { accepted: [], errors: [refusal] } })
    const results = await Promise.all([log('a.A'), log('a.B')])
    for (const result of results) assert.deepEqual(result, { ok: false, id: result.id, status: 403, error: refusal })
    await advance(60_000)
    assert.equal(browser.requests.length, 1)
  })

  for (const status of [400, 401, 404, 413]) {
    test(`an answer ${status} that is not JSON is final: http_error`, async () => {
      const { log } = await load()
      browser.answer({ status })
      const result = await log('a.A')
      assert.deepEqual(result.error, { status, code: 'http_error', message: `HTTP ${status}` })
      assert.equal(result.ok, false)
      await advance(60_000)
      assert.equal(browser.requests.length, 1)
    })
  }

  test('data that cannot be serialized fails its own event only, at once', async () => {
    const { log } = await load()
    const cycle = {}
    cycle.self = cycle
    const results = await Promise.all([log('a.A', cycle), log('a.B', { big: 1n }), log('a.C', { fine: true })])
    assert.deepEqual(
      results.map((r) => [r.ok, r.status, r.error && r.error.code]),
      [
        [false, 0, 'client_error'],
        [false, 0, 'client_error'],
        [true, 202, undefined],
      ],
    )
    assert.match(results[0].error.message, /circular/i)
    assert.deepEqual(
      browser.requests.map((r) => r.body.events.map((e) => e.event)),
      [['a.C']],
    )
  })

  test('odd calls never throw and never reject', async () => {
    const { log } = await load()
    const calls = [log(), log(undefined, null), log('a.A', 'text'), log(Symbol('x')), log('a.A', { toJSON: () => { throw new Error('no') } })]
    const results = await Promise.all(calls)
    assert.equal(results.length, 5)
    assert.equal(results[4].error.code, 'client_error')
  })

  test('a fetch or sendBeacon that throws at once (a bad endpoint URL, a broken polyfill) never throws into the page', async () => {
    const { log } = await load()
    globalThis.fetch = () => {
      throw new TypeError('Failed to parse URL from http://[bad')
    }
    navigator.sendBeacon = () => {
      throw new TypeError('Illegal invocation')
    }
    let result
    log('a.A').then((r) => (result = r))
    await settle()
    for (let i = 0; i < 5; i++) await advance(30_000)
    assert.equal(result.error.code, 'network_error')
    browser.dispatch('pagehide') // the client listens since its first call: beacons from now on
    let left
    log('a.C').then((r) => (left = r))
    await settle()
    for (let i = 0; i < 5; i++) await advance(30_000)
    assert.equal(left.error.code, 'network_error')
  })

  test('an answer whose errors are not a list still settles every event', async () => {
    const { log } = await load()
    browser.answer({ status: 400, json: { errors: 'nope' } })
    const result = await log('a.A')
    assert.deepEqual(result, { ok: false, id: result.id, status: 400, error: { status: 400, code: 'http_error', message: 'HTTP 400' } })
  })
})

describe('retries', () => {
  test('5xx is retried with exponential backoff and jitter, resending the same ids', async () => {
    const { log } = await load()
    browser.answer({ status: 503 }, { status: 500, json: { accepted: [], errors: [{ index: null }] } }, { status: 502 })
    const pending = log('a.A', { n: 1 })
    let result
    pending.then((r) => (result = r))
    await settle()
    assert.equal(browser.requests.length, 1)
    // Math.random() is 0.5 here: each delay is 3/4 of 1 s, 2 s, 4 s ...
    for (const [delay, count] of [
      [750, 2],
      [1500, 3],
      [3000, 4],
    ]) {
      await advance(delay - 1)
      assert.equal(browser.requests.length, count - 1, `not before ${delay} ms`)
      await advance(1)
      assert.equal(browser.requests.length, count)
    }
    assert.deepEqual(result, { ok: true, id: browser.requests[0].body.events[0].id, status: 202 })
    const ids = browser.requests.map((r) => r.body.events[0].id)
    assert.equal(new Set(ids).size, 1, 'a retry sends the same event id, so handlers run once')
  })

  test('jitter spreads the delay between half and all of the backoff', async () => {
    // The first retry waits 0.5 s to 1 s, as Math.random() goes from 0 to almost 1.
    for (const [random, delay] of [
      [0, 500],
      [0.998, 999],
    ]) {
      Math.random.mock.mockImplementation(() => random)
      const { log } = await load()
      const before = browser.requests.length
      browser.answer({ status: 503 })
      log('a.A')
      await settle()
      await advance(delay - 1)
      assert.equal(browser.requests.length, before + 1, `not before ${delay} ms`)
      await advance(2)
      assert.equal(browser.requests.length, before + 2, `by ${delay + 1} ms`)
    }
  })

  test('429 waits at least as long as Retry-After says', async () => {
    const { log } = await load()
    browser.answer({ status: 429, headers: { 'Retry-After': '7' }, json: { accepted: [], errors: [{ index: null }] } })
    const pending = log('a.A')
    await settle()
    await advance(6999)
    assert.equal(browser.requests.length, 1)
    await advance(1)
    assert.equal(browser.requests.length, 2)
    assert.equal((await pending).ok, true)
  })

  test('network errors are retried; after the last retry the result says network_error', async () => {
    const { log } = await load()
    browser.answer(...Array.from({ length: 6 }, () => new TypeError('Failed to fetch')))
    let result
    log('a.A').then((r) => (result = r))
    await settle()
    for (let i = 0; i < 5; i++) await advance(30_000)
    assert.equal(browser.requests.length, 6, 'one attempt and 5 retries')
    assert.deepEqual(result, { ok: false, id: result.id, status: 0, error: { status: 0, code: 'network_error', message: 'no answer' } })
    await advance(60_000)
    assert.equal(browser.requests.length, 6)
  })

  test('the backoff stops growing at 30 s', async () => {
    const { log } = await load()
    browser.answer(...Array.from({ length: 5 }, () => ({ status: 503 })))
    log('a.A')
    await settle()
    for (const delay of [750, 1500, 3000, 6000, 12000]) await advance(delay)
    assert.equal(browser.requests.length, 6)
    // A 7th attempt never happens: the 6th answered 202.
    await advance(60_000)
    assert.equal(browser.requests.length, 6)
  })
})

describe('leaving the page', () => {
  test('on pagehide, queued events and those waiting for a retry go out as one beacon each batch', async () => {
    const { log } = await load()
    browser.answer({ status: 503 })
    const waiting = log('a.Waiting')
    await settle()
    assert.equal(browser.requests.length, 1)
    const queued = log('a.Queued') // logged in the same tick as pagehide: still in the queue
    browser.dispatch('pagehide')
    const [w, q] = await Promise.all([waiting, queued])
    assert.deepEqual(
      browser.beacons.map((b) => [b.url, b.body.events.map((e) => e.event)]),
      [
        ['/event/log', ['a.Queued']],
        ['/event/log', ['a.Waiting']],
      ],
    )
    assert.equal(browser.beacons[1].body.events[0].id, browser.requests[0].body.events[0].id, 'same id as before')
    assert.deepEqual(w, { ok: true, id: w.id, status: 0 }, 'the browser took the beacon; no answer to read')
    assert.deepEqual(q, { ok: true, id: q.id, status: 0 })
    await advance(60_000)
    assert.equal(browser.requests.length, 1, 'the retry timer was cancelled')
  })

  test("an event logged in the page's own pagehide handler, after the client's, goes as a beacon", async () => {
    const { log } = await load()
    await log('a.First') // the client listens from its first call
    browser.dispatch('pagehide')
    const result = await log('a.Leave')
    assert.deepEqual(
      browser.beacons.map((b) => b.body.events[0].event),
      ['a.Leave'],
    )
    assert.equal(result.ok, true)
  })

  test('when the beacon is refused (too big, quota), a keepalive fetch carries the events', async () => {
    const { log } = await load()
    await log('a.First')
    browser.beaconAccepts = false
    browser.dispatch('pagehide')
    const result = await log('a.Leave')
    assert.equal(browser.beacons.length, 1)
    assert.equal(browser.requests.length, 2)
    assert.equal(browser.requests[1].init.keepalive, true)
    assert.deepEqual(result, { ok: true, id: result.id, status: 202 })
  })

  test('hidden sends beacons; visible again goes back to fetch and retries', async () => {
    const { log } = await load()
    await log('a.First')
    browser.visibilityState = 'hidden'
    browser.dispatch('visibilitychange')
    await log('a.Hidden')
    browser.visibilityState = 'visible'
    browser.dispatch('visibilitychange')
    await log('a.Visible')
    assert.deepEqual(
      browser.beacons.map((b) => b.body.events[0].event),
      ['a.Hidden'],
    )
    assert.deepEqual(
      browser.requests.map((r) => r.body.events[0].event),
      ['a.First', 'a.Visible'],
    )
  })
})

describe('configure', () => {
  test('sets the endpoint of later requests', async () => {
    const { log, configure } = await load()
    configure({ endpoint: 'https://events.example.com/track/log' })
    configure({}) // keeps it
    configure()
    await log('a.A')
    assert.equal(browser.requests[0].url, 'https://events.example.com/track/log')
  })
})
