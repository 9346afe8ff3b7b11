// The status page at the gateway's `/`: plain HTML and JS with no build step, its map drawn by d3-geo from the
// world-atlas land outline, all served by the gateway itself from node_modules. The page asks only this gateway
// (its Content-Security-Policy forbids anything else), so nothing leaves the machine that opens it.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export interface StaticAsset {
  body: Buffer;
  contentType: string;
}

const require = createRequire(import.meta.url);
const dist = (pkg: string): string => dirname(require.resolve(pkg));
const HERE = join(import.meta.dirname, 'status-page');

/** URL path → file: the page's own files, then the libraries it uses, exactly as their packages ship them. */
function assetFiles(): Record<string, { file: string; contentType: string }> {
  const js = 'text/javascript; charset=utf-8';
  return {
    '/': { file: join(HERE, 'index.html'), contentType: 'text/html; charset=utf-8' },
    '/status/status.js': { file: join(HERE, 'status.js'), contentType: js },
    '/status/status.css': { file: join(HERE, 'status.css'), contentType: 'text/css; charset=utf-8' },
    // d3-array is d3-geo's dependency: resolved from d3-geo, so it is the version d3-geo was installed with.
    '/status/vendor/d3-array.min.js': { file: join(dirname(createRequire(require.resolve('d3-geo')).resolve('d3-array')), 'd3-array.min.js'), contentType: js },
    '/status/vendor/d3-geo.min.js': { file: join(dist('d3-geo'), 'd3-geo.min.js'), contentType: js },
    '/status/vendor/topojson-client.min.js': { file: join(dirname(require.resolve('topojson-client/package.json')), 'dist', 'topojson-client.min.js'), contentType: js },
    '/status/vendor/land-110m.json': { file: join(dirname(require.resolve('world-atlas/package.json')), 'land-110m.json'), contentType: 'application/json' },
  };
}

/** Only this gateway: scripts, styles, data and connections from 'self', nothing inline, no frames. */
export const STATUS_PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Reads every asset once (a few hundred KiB), so serving one is a map lookup. */
export async function loadStatusPage(): Promise<Map<string, StaticAsset>> {
  const assets = new Map<string, StaticAsset>();
  for (const [path, { file, contentType }] of Object.entries(assetFiles())) assets.set(path, { body: await readFile(file), contentType });
  return assets;
}
