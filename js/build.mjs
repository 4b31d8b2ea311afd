// Builds the client: `node js/build.mjs [outdir]`.
//   js/dist/eventlib.js       the ES module (package.json "exports")
//   js/dist/eventlib.min.js   the minified IIFE that defines window.yipit.event ("unpkg")
// and copies the IIFE to flask_eventlib/static/eventlib.js, the file the blueprint serves (it is
// committed, so `pip install` needs no node). With an outdir, writes all three there instead: the
// tests build into a temporary folder and compare.
import { copyFileSync, mkdirSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const outdir = process.argv[2] ? resolve(process.argv[2]) : null
const dist = outdir || join(root, 'js', 'dist') // not dist/, which Python's build writes
const served = outdir ? join(outdir, 'static-eventlib.js') : join(root, 'flask_eventlib', 'static', 'eventlib.js')
const common = { bundle: true, target: 'es2020', legalComments: 'none', logLevel: 'warning' }

await build({ ...common, entryPoints: [join(root, 'js', 'eventlib.js')], format: 'esm', outfile: join(dist, 'eventlib.js') })
await build({
  ...common,
  entryPoints: [join(root, 'js', 'browser.js')],
  format: 'iife',
  minify: true,
  outfile: join(dist, 'eventlib.min.js'),
})
mkdirSync(dirname(served), { recursive: true })
copyFileSync(join(dist, 'eventlib.min.js'), served)
