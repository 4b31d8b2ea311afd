// Compiled by tests/test_js.py with the declarations `flask eventlib types` writes for the sample
// app (tests/sample: web.PageView, web.Rating, web.Search). Lines marked @ts-expect-error must fail.
import { configure, log, type LogResult } from '../../index.js'

const result: Promise<LogResult> = yipit.event.log('web.Rating', { stars: 4 })
log('web.Search', { query: 'pizza', page: 2 })
yipit.event.log('web.PageView', { page: 'home' })
yipit.event.log('web.PageView') // every field is optional: so is the data
yipit.event.configure({ endpoint: '/track/log' })
configure({ endpoint: 'https://www.example.com/event/log' })

async function showErrors(): Promise<string[]> {
  const { ok, id, status, error } = await result
  const where: number | null | undefined = error?.index
  return ok ? [id, String(status), String(where)] : [error?.code ?? '', error?.message ?? '']
}
showErrors()

// @ts-expect-error: stars is a number
yipit.event.log('web.Rating', { stars: '4' })
// @ts-expect-error: stars is required
yipit.event.log('web.Rating', {})
// @ts-expect-error: the data of web.Search is required (query)
yipit.event.log('web.Search')
// @ts-expect-error: no such event
log('web.Serch', { query: 'x' })
// @ts-expect-error: a private event is not declared for browsers
log('web.Internal', {})
// @ts-expect-error: unknown key
log('web.PageView', { page: 'a', pgae: 'b' })
// @ts-expect-error: configure takes an endpoint
configure({ url: '/x' })
