// A process that takes the state lock on argv[2] (protocol/state-lock.ts) and says what happened on stdout, one line:
// "held", "refused <message>", later "lost <message>". It holds the lock until stdin closes, then releases it.
import { acquireStateLock } from '../../protocol/state-lock.ts';

const path = process.argv[2]!;
try {
  const release = await acquireStateLock(path, 'receipt log', {
    onLost: (err) => console.log(`lost ${err.message}`),
    onWait: (message) => console.log(`waiting ${message}`),
  });
  console.log('held');
  process.stdin.resume();
  process.stdin.once('end', () => void release().then(() => process.exit(0)));
} catch (err) {
  console.log(`refused ${(err as Error).message}`);
  process.exit(1);
}
