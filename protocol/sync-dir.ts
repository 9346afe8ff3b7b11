// Durable files: a file's bytes once it is synced, a rename once its directory is synced (without that a crash can
// bring back the old name, or neither).
import { open } from 'node:fs/promises';

/** fsyncs the directory `dir`, making renames and creations in it durable. Best effort: some filesystems refuse. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r').catch(() => undefined);
  if (handle === undefined) return;
  await handle.sync().catch(() => {});
  await handle.close().catch(() => {});
}

/** Writes `body` to `path` (created or truncated) and fdatasyncs it before returning. */
export async function writeFileSynced(path: string, body: string | Buffer): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.writeFile(body);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}
