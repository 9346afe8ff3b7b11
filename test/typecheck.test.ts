// The project is strict TypeScript, but tsx and esbuild strip types without checking them: without this test a type
// error (or an unused import, tsconfig's noUnusedLocals) would reach main with every other test green.
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const TSC = createRequire(import.meta.url).resolve('typescript/bin/tsc');

describe('typecheck', () => {
  it('tsc --noEmit finds no error in the whole project (sources, tests, benchmarks)', async () => {
    const { code, out } = await new Promise<{ code: number | null; out: string }>((resolve) => {
      // Bounded: a loaded CI box takes ~15 s for what a quiet one does in 13.
      execFile(process.execPath, [TSC, '--noEmit', '--pretty', 'false', '-p', ROOT], { cwd: ROOT, timeout: 240_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, out: `${stdout}${stderr}` });
      });
    });
    // The compiler's own lines say what is wrong and where.
    expect(out.split('\n').filter((l) => l.includes('error TS'))).toEqual([]);
    expect(code).toBe(0);
  }, 300_000);
});
