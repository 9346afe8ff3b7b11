// A call to a remote end that may never answer (a black-holed RPC endpoint: a firewall that drops, a provider that
// hangs) given a deadline: ethers' own timeout is five minutes, far too long for a check a service waits on.

/** `call()`'s answer, or a rejection with `message` once `ms` have passed; the timer never keeps the process alive. */
export function withDeadline<T>(call: () => Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
    timer.unref();
  });
  return Promise.race([call(), late]).finally(() => clearTimeout(timer));
}
