// The gateway's status page: draws the land from world-atlas with d3-geo once, then every 2 s reads the gateway's
// JSON API (same origin only) and redraws the nodes and the table. No framework and no build step.
'use strict';

const WIDTH = 960;
const HEIGHT = 480;
const REFRESH_MS = 2000;
const SVG = 'http://www.w3.org/2000/svg';

const projection = d3.geoNaturalEarth1().fitSize([WIDTH, HEIGHT], { type: 'Sphere' });
const path = d3.geoPath(projection);
// Kept on window so a test can place a coordinate exactly as the map does.
window.statusProjection = projection;

/** `?near=lat,lon` in the page's URL says where the viewer is (the gateway's GeoIP cannot place a loopback visitor). */
const near = new URLSearchParams(location.search).get('near');

function el(name, attrs, text) {
  const e = name === 'tr' || name === 'td' ? document.createElement(name) : document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

async function drawLand() {
  const topo = await (await fetch('/status/vendor/land-110m.json')).json();
  const land = document.getElementById('land');
  land.append(el('path', { class: 'graticule', d: path(d3.geoGraticule10()) }));
  land.append(el('path', { class: 'land', d: path(topojson.feature(topo, topo.objects.land)) }));
}

function drawMarkers(nodes, viewer) {
  const g = document.getElementById('markers');
  g.replaceChildren();
  for (const n of nodes) {
    const { lat, lon } = n.location;
    if (lat === null || lon === null) continue;
    const [x, y] = projection([lon, lat]);
    const healthy = n.healthy && !n.quarantine;
    const dot = el('circle', { class: `node ${healthy ? 'healthy' : 'down'}`, cx: x.toFixed(2), cy: y.toFixed(2), r: 6, 'data-node': n.id, 'data-lat': lat, 'data-lon': lon });
    dot.append(el('title', {}, `${n.url} (${healthy ? 'healthy' : n.downReason || 'down'})`));
    g.append(dot, el('text', { class: 'label', x: (x + 9).toFixed(2), y: (y + 4).toFixed(2) }, new URL(n.url).host));
  }
  const note = document.getElementById('viewer-note');
  if (viewer && viewer.location) {
    const [x, y] = projection([viewer.location.lon, viewer.location.lat]);
    g.append(el('circle', { class: 'viewer', cx: x.toFixed(2), cy: y.toFixed(2), r: 5, 'data-lat': viewer.location.lat, 'data-lon': viewer.location.lon }));
    note.textContent = `(${viewer.source === 'near' ? 'from ?near=' : 'located by the gateway from your address'})`;
  } else {
    note.textContent = '(not placed: the gateway cannot locate your address; add ?near=lat,lon to this page’s URL)';
  }
}

/** The verdict of a node's last capacity challenge (/v1/nodes keeps its last five, oldest first). */
function lastChallenge(n) {
  const c = n.challenges && n.challenges.length ? n.challenges[n.challenges.length - 1] : null;
  if (!c) return ['challenge', 'none yet'];
  return c.ok ? ['challenge passed', `passed, ${bytes(c.bytesPerSecond)}/s`, c] : ['challenge failed', `failed: ${c.failure}`, c];
}

function rewardOf(n, rewards) {
  if (!rewards || rewards.state !== 'settled') return '–';
  const r = rewards.nodes[n.id];
  return r ? r.amountTokens : `0 ${rewards.token.symbol} (not in epoch ${rewards.epoch})`;
}

/** A node's stake on chain as the gateway last read it (with --rpc), in whole thousandths of the token. */
function stakeOf(n) {
  if (n.stake === undefined) return '– (no stake check)';
  if (n.stake === null) return 'not read yet';
  const milli = BigInt(n.stake.amount) / 10n ** 15n;
  const text = `${milli / 1000n}.${String(milli % 1000n).padStart(3, '0')} EDGE`;
  return n.stake.unbondsAt ? `${text}, unbonding` : text;
}

function drawTable(nodes, rewards) {
  const body = document.querySelector('#nodes tbody');
  body.replaceChildren();
  for (const n of nodes) {
    const healthy = n.healthy && !n.quarantine;
    const change = n.scoreChanges && n.scoreChanges.length ? n.scoreChanges[n.scoreChanges.length - 1] : null;
    const served = n.served || {};
    const tr = el('tr', { 'data-node': n.id });
    const cells = [
      ['id', `${n.id.slice(0, 10)}…`],
      ['url', n.url],
      [`health ${healthy ? 'healthy' : 'down'}`, healthy ? (n.saturated ? 'healthy, saturated' : 'healthy') : `down: ${n.quarantine ? n.quarantine.reason : n.downReason || 'unknown'}`],
      ['num score', n.score.toFixed(3)],
      ['reason', change ? `${change.from.toFixed(2)} → ${change.to.toFixed(2)}: ${change.reason}` : 'not probed yet'],
      ['num served', bytes(served.bytes)],
      ['num hit-ratio', served.hitRatio === null || served.hitRatio === undefined ? '–' : `${(served.hitRatio * 100).toFixed(1)} %`],
      ['num rate', `${bytes(n.load.bytesPerSecond)}/s`],
      ['num connections', String(n.load.activeConnections)],
      ['num cached', String(n.cachedShards)],
      ['num stake', stakeOf(n)],
      lastChallenge(n),
      ['num reward', rewardOf(n, rewards)],
    ];
    for (const [cls, text, challenge] of cells) {
      const td = el('td', { class: cls }, text);
      // When and what: the time, the epoch and the byte range challenged, on hover.
      if (challenge) td.title = `${new Date(challenge.at).toLocaleString()}, epoch ${challenge.epoch}: bytes ${challenge.offset}+${challenge.length} of shard ${challenge.shard.slice(0, 12)}…`;
      tr.append(td);
    }
    body.append(tr);
  }
}

/** The "Epoch rewards" section: every node the latest settled epoch pays, joined with the connected nodes' URLs. */
function drawRewards(rewards, nodes) {
  const note = document.getElementById('rewards-note');
  const table = document.getElementById('rewards-table');
  const epochLabel = document.getElementById('rewards-epoch');
  note.dataset.state = rewards.state;
  if (rewards.state !== 'settled') {
    table.hidden = true;
    epochLabel.textContent = '';
    note.textContent =
      rewards.state === 'unavailable' ? `the settler at ${rewards.settler} could not be read: ${rewards.error}; retrying`
      : rewards.note ? rewards.note
      : `could not read /v1/rewards: ${rewards.error || 'unexpected answer'}; retrying`; // e.g. a 429 from the rate limit
    return;
  }
  const urls = new Map(nodes.map((n) => [n.id, n.url]));
  const rows = Object.entries(rewards.nodes);
  epochLabel.textContent = `(epoch ${rewards.epoch})`;
  note.textContent =
    `epoch ${rewards.epoch} settled by ${rewards.settler}: ${rewards.totalTokens} to ${rows.length} node${rows.length === 1 ? '' : 's'}, Merkle root ${rewards.root ? rewards.root.slice(0, 18) + '…' : 'none (nothing earned)'}` +
    (rewards.staleError ? ` · the settler could not be read just now (${rewards.staleError}); showing the last figures` : '');
  const body = table.querySelector('tbody');
  body.replaceChildren();
  for (const [address, r] of rows) {
    const tr = el('tr', { 'data-node': address });
    const cells = [
      ['id', address],
      ['url', urls.get(address) || 'not connected to this gateway'],
      ['num amount', r.amountTokens],
      ['num paid', bytes(Number(r.paidBytes))],
      ['num anonymous', bytes(Number(r.anonymousBytes))],
      ['num capacity', r.capacityPoints],
      ['num score', (r.scoreBps / 10000).toFixed(3)],
    ];
    for (const [cls, text] of cells) tr.append(el('td', { class: cls }, text));
    body.append(tr);
  }
  table.hidden = false;
}

async function refresh() {
  try {
    const [nodesRes, health, viewer, rewards] = await Promise.all([
      fetch('/v1/nodes').then((r) => r.json()),
      fetch('/healthz').then((r) => r.json()),
      fetch(`/v1/whereami${near ? `?near=${encodeURIComponent(near)}` : ''}`).then((r) => r.json()),
      fetch('/v1/rewards').then((r) => r.json()),
    ]);
    const nodes = nodesRes.nodes || [];
    drawMarkers(nodes, viewer);
    drawTable(nodes, rewards);
    drawRewards(rewards, nodes);
    const up = nodes.filter((n) => n.healthy && !n.quarantine).length;
    const waiting = (health.waiting || []).map((w) => `${w.dataset} waiting for ${w.url}: ${w.error}`);
    document.getElementById('summary').textContent =
      `${up} of ${nodes.length} nodes healthy · datasets: ${(health.datasets || []).join(', ') || 'none loaded'}` + (waiting.length ? ` · ${waiting.join('; ')}` : '');
    document.getElementById('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    document.getElementById('updated').textContent = `could not reach the gateway: ${err.message}; retrying`;
  }
}

drawLand().catch((err) => {
  document.getElementById('summary').textContent = `map unavailable: ${err.message}`;
});
refresh();
setInterval(refresh, REFRESH_MS);
