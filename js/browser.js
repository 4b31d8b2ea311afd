// The IIFE build's entry (flask_eventlib/static/eventlib.js, unpkg): defines window.yipit.event,
// keeping whatever else window.yipit holds. The script tag's data-endpoint sets the endpoint.
import { configure, log } from './eventlib.js'

const yipit = (window.yipit = window.yipit || {})
if (!yipit.event) {
  yipit.event = { log, configure }
  const script = document.currentScript
  configure({ endpoint: script?.dataset.endpoint })
}
