// Unit tests of the console's script, flask_eventlib/console/static/console.js, with fakes for the
// page, fetch and timers (node --test js/test/). tests/e2e/test_console.py runs it in Chromium.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { confirmations, live, selectAll } from '../../flask_eventlib/console/static/console.js'

/** Timers run by hand: `next()` runs the one that is due. */
function fakeTimers() {
  const due = new Map()
  let id = 0
  return {
    setTimeout(fn, ms) { due.set(++id, { fn, ms }); return id },
    clearTimeout(timer) { due.delete(timer) },
    pending: () => [...due.values()].map(({ ms }) => ms),
    async next() {
      const [[timer, { fn }]] = due
      due.delete(timer)
      await fn()
    },
  }
}

function fakeRoot(html = 'first') {
  const attributes = {}
  return {
    dataset: { live: '/eventlib/live' },
    innerHTML: html,
    attributes,
    setAttribute(name, value) { attributes[name] = value },
    removeAttribute(name) { delete attributes[name] },
  }
}

const answer = (status, body) => async () => ({ ok: status < 400, status, text: async () => body })

test('live: every 2 s it fetches the fragment and swaps it in', async () => {
  const root = fakeRoot()
  const timers = fakeTimers()
  const asked = []
  const fetch = async (url, options) => { asked.push([url, options.credentials]); return answer(200, `n=${asked.length}`)() }
  live(root, { fetch, timers })
  assert.deepEqual(timers.pending(), [2000])
  assert.equal(root.innerHTML, 'first', 'nothing before the first tick')
  await timers.next()
  assert.equal(root.innerHTML, 'n=1')
  await timers.next()
  assert.equal(root.innerHTML, 'n=2')
  assert.deepEqual(asked, [['/eventlib/live', 'same-origin'], ['/eventlib/live', 'same-origin']])
  assert.deepEqual(timers.pending(), [2000])
})

test('live: a failed fetch keeps the figures, marks them stale, and the next one clears it', async () => {
  const root = fakeRoot()
  const timers = fakeTimers()
  const answers = [answer(500, 'oops'), async () => { throw new TypeError('Failed to fetch') }, answer(200, 'fresh')]
  live(root, { fetch: () => answers.shift()(), timers })
  await timers.next()
  assert.equal(root.innerHTML, 'first')
  assert.equal(root.attributes['data-stale'], 'HTTP 500')
  await timers.next()
  assert.equal(root.attributes['data-stale'], 'Failed to fetch')
  await timers.next()
  assert.equal(root.innerHTML, 'fresh')
  assert.equal('data-stale' in root.attributes, false)
  assert.deepEqual(timers.pending(), [2000], 'it goes on polling')
})

test('live: a hidden page fetches nothing; the stop function ends the polling', async () => {
  const root = fakeRoot()
  const timers = fakeTimers()
  const doc = { hidden: true }
  let fetched = 0
  const stop = live(root, { fetch: async () => { fetched++; return answer(200, 'x')() }, timers, doc, every: 500 })
  await timers.next()
  assert.equal(fetched, 0)
  doc.hidden = false
  await timers.next()
  assert.equal(fetched, 1)
  assert.deepEqual(timers.pending(), [500])
  stop()
  assert.deepEqual(timers.pending(), [])
})

function fakeDocument() {
  const listeners = {}
  return {
    addEventListener(type, fn) { listeners[type] = fn },
    fire(type, event) { listeners[type](event) },
  }
}

test('confirmations: a form or button with data-confirm submits only if the person says yes', () => {
  const doc = fakeDocument()
  const asked = []
  let yes = false
  confirmations(doc, (text) => { asked.push(text); return yes })
  const submit = (form, button) => {
    let prevented = false
    doc.fire('submit', { target: { dataset: form }, submitter: button && { dataset: button }, preventDefault: () => { prevented = true } })
    return !prevented
  }
  assert.equal(submit({ confirm: 'Purge them?' }), false)
  yes = true
  assert.equal(submit({ confirm: 'Purge them?' }), true)
  assert.equal(submit({}, { confirm: 'Purge the selected?' }), true)
  yes = false
  assert.equal(submit({}, {}), true, 'no question, no prompt')
  assert.deepEqual(asked, ['Purge them?', 'Purge them?', 'Purge the selected?'])
})

test('selectAll: the box checks and clears every id box of its form', () => {
  const doc = fakeDocument()
  selectAll(doc)
  const boxes = [{ checked: false }, { checked: true }]
  const form = { querySelectorAll: (selector) => (selector == 'input[name=id]' ? boxes : []) }
  const all = { checked: true, form, hasAttribute: (name) => name == 'data-select-all' }
  doc.fire('change', { target: all })
  assert.deepEqual(boxes.map((b) => b.checked), [true, true])
  all.checked = false
  doc.fire('change', { target: all })
  assert.deepEqual(boxes.map((b) => b.checked), [false, false])
  doc.fire('change', { target: { checked: true, hasAttribute: () => false } })
  assert.deepEqual(boxes.map((b) => b.checked), [false, false], 'other boxes change nothing')
})
