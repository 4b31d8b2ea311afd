// The flask-eventlib console's only script: the overview's figures follow without a reload, a purge
// asks first, a box selects every dead letter of a page. Pages work without it (plain forms).

/** Every `every` ms, fetch root's `data-live` URL and swap its HTML in; returns a stop function.
 * A failed fetch keeps the figures and marks them stale (`data-stale`); a hidden page skips. */
export function live(root, { fetch = globalThis.fetch, every = 2000, timers = globalThis, doc } = {}) {
  let timer
  const tick = async () => {
    if (!doc || !doc.hidden) {
      try {
        const response = await fetch(root.dataset.live, { credentials: 'same-origin' })
        if (!response.ok) throw new Error('HTTP ' + response.status)
        root.innerHTML = await response.text()
        root.removeAttribute('data-stale')
      } catch (error) {
        root.setAttribute('data-stale', error.message || '' + error)
      }
    }
    timer = timers.setTimeout(tick, every)
  }
  timer = timers.setTimeout(tick, every)
  return () => timers.clearTimeout(timer)
}

/** Forms (or their submit buttons) with `data-confirm` submit only once the person says yes. */
export function confirmations(doc, ask) {
  doc.addEventListener('submit', (event) => {
    const text = (event.submitter && event.submitter.dataset.confirm) || event.target.dataset.confirm
    if (text && !ask(text)) event.preventDefault()
  })
}

/** A checkbox with `data-select-all` checks or clears every `name=id` box of its form. */
export function selectAll(doc) {
  doc.addEventListener('change', ({ target }) => {
    if (target.hasAttribute('data-select-all'))
      for (const box of target.form.querySelectorAll('input[name=id]')) box.checked = target.checked
  })
}

if (typeof document != 'undefined') {
  const root = document.querySelector('[data-live]')
  if (root) live(root, { doc: document })
  confirmations(document, (text) => confirm(text))
  selectAll(document)
}
