// Line charts as standalone SVG strings (no dependencies, viewable in any browser and embeddable in HTML).

export interface Series {
  name: string;
  points: [number, number][];
  dashed?: boolean;
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  xLog?: boolean;
  yLog?: boolean;
  yMin?: number;
  yMax?: number;
  /** Horizontal reference lines, e.g. the 90% utilization target. */
  hLines?: { y: number; label: string }[];
  xTickFormat?: (x: number) => string;
  yTickFormat?: (y: number) => string;
  width?: number;
  height?: number;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function niceTicks(min: number, max: number, count: number): number[] {
  if (!(max > min)) return [min];
  const step0 = (max - min) / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const out: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function logTicks(min: number, max: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    const v = 10 ** e;
    if (v >= min * (1 - 1e-9) && v <= max * (1 + 1e-9)) out.push(v);
  }
  return out.length >= 2 ? out : [min, max];
}

const defaultFormat = (v: number) => (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-2 && v !== 0) ? v.toExponential(0) : String(Number(v.toPrecision(3))));

export function lineChartSvg(c: LineChart): string {
  const W = c.width ?? 720;
  const H = c.height ?? 420;
  const m = { left: 70, right: 180, top: 40, bottom: 55 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const pts = c.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (pts.length === 0) throw new Error(`chart "${c.title}": no finite points to plot`);
  if (c.xLog && pts.some(([x]) => x <= 0)) throw new Error(`chart "${c.title}": a log x axis needs positive x values`);
  if (c.yLog && pts.some(([, y]) => y <= 0)) throw new Error(`chart "${c.title}": a log y axis needs positive y values`);
  let xMin = Math.min(...pts.map((p) => p[0]));
  let xMax = Math.max(...pts.map((p) => p[0]));
  let yMin = c.yMin ?? Math.min(...pts.map((p) => p[1]));
  let yMax = c.yMax ?? Math.max(...pts.map((p) => p[1]));
  if (xMax === xMin) { xMin = c.xLog ? xMin / 2 : xMin - 1; xMax = c.xLog ? xMax * 2 : xMax + 1; }
  if (yMax === yMin) { yMin = c.yLog ? yMin / 2 : yMin - 1; yMax = c.yLog ? yMax * 2 : yMax + 1; }
  const tx = (x: number) =>
    m.left + (c.xLog ? (Math.log10(x) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin)) : (x - xMin) / (xMax - xMin)) * pw;
  const ty = (y: number) =>
    m.top + ph - (c.yLog ? (Math.log10(y) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin)) : (y - yMin) / (yMax - yMin)) * ph;
  const xf = c.xTickFormat ?? defaultFormat;
  const yf = c.yTickFormat ?? defaultFormat;
  const xt = c.xLog ? logTicks(xMin, xMax) : niceTicks(xMin, xMax, 6);
  const yt = c.yLog ? logTicks(yMin, yMax) : niceTicks(yMin, yMax, 5);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2 - m.right / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(c.title)}</text>`);
  for (const v of yt) {
    const y = ty(v).toFixed(1);
    out.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${escapeXml(yf(v))}</text>`);
  }
  for (const v of xt) {
    const x = tx(v).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${m.top}" y2="${m.top + ph}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x}" y="${m.top + ph + 16}" text-anchor="middle">${escapeXml(xf(v))}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  for (const h of c.hLines ?? []) {
    if (h.y < yMin || h.y > yMax) continue;
    const y = ty(h.y).toFixed(1);
    out.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${y}" y2="${y}" stroke="#555" stroke-dasharray="6 4"/>`);
    out.push(`<text x="${m.left + 4}" y="${Number(y) - 4}" fill="#555">${escapeXml(h.label)}</text>`);
  }
  c.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!;
    const p = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).sort((a, b) => a[0] - b[0]);
    if (p.length === 0) return;
    const d = p.map(([x, y], j) => `${j === 0 ? 'M' : 'L'}${tx(x).toFixed(1)},${ty(y).toFixed(1)}`).join(' ');
    out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    for (const [x, y] of p) out.push(`<circle cx="${tx(x).toFixed(1)}" cy="${ty(y).toFixed(1)}" r="3" fill="${color}"><title>${escapeXml(`${s.name}: ${xf(x)}, ${yf(y)}`)}</title></circle>`);
    const ly = m.top + 10 + i * 20;
    out.push(`<line x1="${m.left + pw + 12}" x2="${m.left + pw + 36}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    out.push(`<text x="${m.left + pw + 42}" y="${ly}" dominant-baseline="middle">${escapeXml(s.name)}</text>`);
  });
  out.push(`<text x="${m.left + pw / 2}" y="${H - 12}" text-anchor="middle">${escapeXml(c.xLabel)}</text>`);
  out.push(`<text transform="translate(16 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(c.yLabel)}</text>`);
  out.push('</svg>');
  return out.join('\n');
}
