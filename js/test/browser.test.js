// The built IIFE (the file the Flask blueprint serves), run as a classic script in a fake window.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import vm from 'node:vm'

const built = readFileSync(new URL('../../flask_eventlib/static/eventlib.js', import.meta.url), 'utf8')

/** Run the built file in a new global scope holding `window` (plus `globals`); return that scope. */
const run = ({ yipit, endpoint, currentScript = true } = {}) => {
  const requests = []
  const scope = {
    crypto,
    JSON,
    Promise,
    Set,
    Math,
    setTimeout,
    clearTimeout,
    addEventListener: () => {},
    navigator: {},
    document: {
      currentScript: currentScript ? { dataset: endpoint ? { endpoint } : {} } : null,
      addEventListener: () => {},
      visibilityState: 'visible',
    },
    fetch: (url, init) => {
      requests.push({ url, body: JSON.parse(init.body) })
      return Promise.resolve({ status: 202, headers: { get: () => null }, json: () => Promise.resolve({ accepted: [], errors: [] }) })
    },
  }
  scope.window = scope
  if (yipit) scope.yipit = yipit
  vm.createContext(scope)
  vm.runInContext(built, scope)
  return { scope, requests }
}

test('defines window.yipit.event with log and configure', async () => {
  const { scope, requests } = run()
  assert.deepEqual(Object.keys(scope.yipit), ['event'])
  assert.deepEqual(Object.keys(scope.yipit.event).sort(), ['configure', 'log'])
  const result = await scope.yipit.event.log('web.PageView', { page: 'home' })
  assert.equal(result.ok, true)
  assert.deepEqual(requests[0].url, '/event/log')
  assert.deepEqual(requests[0].body.events[0].data, { page: 'home' })
})

test('keeps what an existing window.yipit holds', () => {
  const yipit = { user: { id: 7 } }
  const { scope } = run({ yipit })
  assert.equal(scope.yipit, yipit)
  assert.deepEqual(yipit.user, { id: 7 })
  assert.equal(typeof yipit.event.log, 'function')
})

test('loaded twice, the first client stays (its queue and settings too)', () => {
  const first = run()
  const client = first.scope.yipit.event
  const second = run({ yipit: first.scope.yipit, endpoint: '/other/log' })
  assert.equal(second.scope.yipit.event, client)
})

test("the script tag's data-endpoint sets the endpoint", async () => {
  const { scope, requests } = run({ endpoint: '/track/log' })
  await scope.yipit.event.log('web.PageView')
  assert.equal(requests[0].url, '/track/log')
})

test('without a current script (injected by other code), the default endpoint is used', async () => {
  const { scope, requests } = run({ currentScript: false })
  await scope.yipit.event.log('web.PageView')
  assert.equal(requests[0].url, '/event/log')
})
