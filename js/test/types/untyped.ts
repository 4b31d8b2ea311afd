// Compiled by tests/test_js.py without generated declarations: YipitEventMap is empty, so any
// name and any object are accepted. Lines marked @ts-expect-error must fail.
import { log, type LogResult } from '../../index.js'

const done: Promise<LogResult> = yipit.event.log('deals.DealClick', { deal_id: 7 })
log('anything.AtAll')
log('app.EventName', { param1: 'val1', nested: { list: [1, 2] } })
window.yipit.event.log('app.EventName', { param1: 'val1' }).then((r) => r.ok || console.warn(r.error?.details))
done.then((r) => r.id.toUpperCase())

// @ts-expect-error: the name is a string
log(7)
// @ts-expect-error: the data is an object
log('app.EventName', 'val1')
