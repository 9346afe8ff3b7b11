// A rename is durable only once its directory is synced: without it a crash can bring back the old name, or neither.
import { open } from 'node:fs/promises';

/** fsyncs the directory `dir`, making renames and creations in it durable. Best effort: some filesystems refuse. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r').catch(() => undefined);
  if (handle === undefined) return;
  await handle.sync().catch(() => {});
  await handle.close().catch(() => {});
}
