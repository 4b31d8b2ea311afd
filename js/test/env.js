// A fake browser for the unit tests: window events, document.visibilityState, fetch, sendBeacon.
// Each test imports a fresh copy of the client (a new module instance) with `load()`.

let copies = 0

export class FakeBrowser {
  constructor() {
    this.listeners = {}
    this.requests = [] // {url, body, init}: what fetch was called with
    this.beacons = [] // {url, body}
    this.answers = [] // what the next fetches answer, in order: see answer()
    this.beaconAccepts = true
    this.visibilityState = 'visible'
  }

  /** Install the globals the client uses; returns a function that removes them. */
  install() {
    const saved = {}
    const globals = {
      addEventListener: (type, listener) => (this.listeners[type] ||= []).push(listener),
      document: {
        addEventListener: (type, listener) => (this.listeners[type] ||= []).push(listener),
        get visibilityState() {
          return browser.visibilityState
        },
      },
      navigator: {
        sendBeacon: (url, body) => {
          this.beacons.push({ url, body: JSON.parse(body) })
          return this.beaconAccepts
        },
      },
      fetch: (url, init) => {
        this.requests.push({ url, body: JSON.parse(init.body), init })
        const next = this.answers.shift() || { status: 202, json: 'accept' }
        if (next instanceof Error) return Promise.reject(next)
        const body = next.json === 'accept' ? { accepted: JSON.parse(init.body).events.map((e) => e.id), errors: [] } : next.json
        const headers = new Map(Object.entries(next.headers || {}).map(([k, v]) => [k.toLowerCase(), v]))
        return Promise.resolve({
          status: next.status,
          headers: { get: (name) => (headers.has(name.toLowerCase()) ? headers.get(name.toLowerCase()) : null) },
          json: () => (body === undefined ? Promise.reject(new SyntaxError('Unexpected token <')) : Promise.resolve(body)),
        })
      },
    }
    const browser = this
    for (const [name, value] of Object.entries(globals)) {
      saved[name] = Object.getOwnPropertyDescriptor(globalThis, name)
      Object.defineProperty(globalThis, name, { value, configurable: true, writable: true })
    }
    return () => {
      for (const [name, descriptor] of Object.entries(saved)) {
        if (descriptor) Object.defineProperty(globalThis, name, descriptor)
        else delete globalThis[name]
      }
    }
  }

  /** Queue the answer of the next request: {status, json?, headers?}, or an Error (network failure). */
  answer(...answers) {
    this.answers.push(...answers)
  }

  /** Dispatch a window event (pagehide, visibilitychange) to the client's listeners. */
  dispatch(type) {
    for (const listener of this.listeners[type] || []) listener({ type })
  }
}

/** A new instance of the client module, with its own queue and settings. */
export const load = () => import(`../eventlib.js?copy=${++copies}`)

/** Let every pending promise callback run (fetch answers go through a few of them). */
export const settle = () => new Promise((resolve) => setImmediate(resolve))
