/** Resolves on the first SIGINT or SIGTERM: how long-running commands wait before shutting down cleanly. */
export function stopSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}
